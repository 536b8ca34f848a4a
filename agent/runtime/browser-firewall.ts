import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

/** The nftables table holding the browser account's rules; one per host, shared by every agent on it. */
export const BROWSER_FIREWALL_TABLE = 'bso_browsers';

/**
 * The rules that keep a browser account off this host's own services: any new connection from a
 * socket of `uid` to a local address (the router, Redis, the agent's metrics, another session: every
 * address of this host is routed over `lo`) or to link-local addresses (cloud metadata at
 * 169.254.169.254) is refused, and so is any UDP there. DNS to a loopback resolver stays allowed, and
 * so do replies on connections the agent opened to the browser. Everything else (the internet) is
 * untouched.
 *
 * The script replaces the table in one transaction, so agents that start at once all leave the same
 * rules, and a browser never runs without them while they are swapped.
 */
export function browserFirewallScript(uid: number): string {
  if (!Number.isInteger(uid) || uid <= 0) throw new Error(`the browser account's uid must be a positive integer, not ${uid}`);
  const t = BROWSER_FIREWALL_TABLE;
  return [
    `table inet ${t} {}`,
    `delete table inet ${t}`,
    `table inet ${t} {`,
    `  chain output {`,
    `    type filter hook output priority filter; policy accept;`,
    `    meta skuid != ${uid} accept`,
    `    oif "lo" meta l4proto { tcp, udp } th dport 53 accept`,
    // Only a connection's first packet (SYN without ACK) is refused: replies on a connection the
    // agent opened to a browser pass. Stateless, so no conntrack entry for every loopback packet.
    `    oif "lo" tcp flags & (syn | ack) == syn reject with tcp reset`,
    `    oif "lo" meta l4proto tcp accept`,
    `    oif "lo" reject`,
    `    ip daddr 169.254.0.0/16 reject`,
    `    ip6 daddr fe80::/10 reject`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** Debian puts nft in /usr/sbin, which a process started by npm may not have on its PATH. */
export function nftBinary(): string {
  return existsSync('/usr/sbin/nft') ? '/usr/sbin/nft' : 'nft';
}

/** Installs (or refreshes) the browser account's rules with `nft`; rejects with a message that names the fix. */
export async function installBrowserFirewall(uid: number, timeoutMs = 10_000): Promise<void> {
  const script = browserFirewallScript(uid);
  await new Promise<void>((resolve, reject) => {
    const child = execFile(nftBinary(), ['-f', '-'], { timeout: timeoutMs }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new Error(
          missing
            ? "nft is not installed: `npm run setup` installs nftables, which keeps browsers off this host's loopback services (or set CHROMIUM_FIREWALL=false)"
            : `could not install the browser firewall (nft): ${stderr.trim() || err.message}`,
        ),
      );
    });
    child.stdin?.on('error', () => {}); // a failed nft closes its stdin early; its exit reports why
    child.stdin?.end(script);
  });
}
