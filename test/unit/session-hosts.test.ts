import { describe, expect, it } from 'vitest';
import { pathForm, sessionCookie, sessionOfHost, tokenFromCookie, uiUrlOf, type SessionHosts } from '../../router/session-hosts.js';

const ID = '0c1b3c1e-7c43-4c1a-9d6e-2b0c6d1d6f00';
const hosts: SessionHosts = { suffix: 'sessions.example.com', target: 'ui' };

describe('session hosts', () => {
  it.each([
    [`${ID}.sessions.example.com`, ID],
    [`${ID}.sessions.example.com:8443`, ID],
    [`${ID.toUpperCase()}.Sessions.Example.com.`, ID],
    ['sessions.example.com', null],
    [`x.${ID}.sessions.example.com`, null],
    [`${ID}.sessions.example.com.evil.net`, null],
    [`${ID}.other.example.com`, null],
    ['UPPER_CASE!.sessions.example.com', null],
    ['', null],
  ])('%s names session %s', (host, expected) => {
    expect(sessionOfHost(host, hosts)).toBe(expected);
  });

  it('is off without a suffix', () => {
    expect(sessionOfHost(`${ID}.sessions.example.com`, undefined)).toBeNull();
  });

  it("is routed as the path form, every path its container's own (`/ui` included)", () => {
    const url = new URL(`http://${ID}.sessions.example.com/assets/app.js?v=1`);
    expect(pathForm(url, ID).pathname + pathForm(url, ID).search).toBe(`/sessions/${ID}/proxy/assets/app.js?v=1`);
    expect(pathForm(new URL(`http://${ID}.sessions.example.com/ui`), ID).pathname).toBe(`/sessions/${ID}/proxy/ui`);
  });

  it('reads its cookie among others, and writes it host-only, HttpOnly, Lax; Secure over https', () => {
    expect(tokenFromCookie('a=1; bso_session_token=t.1.x ; b=2')).toBe('t.1.x');
    expect(tokenFromCookie('bso_session_tokenx=1')).toBeNull();
    expect(tokenFromCookie(null)).toBeNull();
    expect(sessionCookie('t.1.x', true)).toBe('bso_session_token=t.1.x; Path=/; HttpOnly; SameSite=Lax; Secure');
    expect(() => sessionCookie('a;b', false)).toThrow();
  });

  it('builds uiUrl on the public scheme and port', () => {
    expect(uiUrlOf('https://bso.example.com', ID, hosts, 'tok')).toBe(`https://${ID}.sessions.example.com/?token=tok`);
    expect(uiUrlOf('http://127.0.0.1:3000', ID, { suffix: 'localhost', target: 'ui' })).toBe(`http://${ID}.localhost:3000/`);
  });
});
