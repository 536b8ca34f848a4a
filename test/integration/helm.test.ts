import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { helmChart, type K8sObject } from '../../harness/tools.js';

const PLAIN = new URL('../../infra/k8s/', import.meta.url).pathname;

const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byKey = (objects: K8sObject[]) => Object.fromEntries(objects.map((o) => [key(o), o]));
const parse = (text: string) => parseAllDocuments(text).flatMap((d) => (d.contents ? [d.toJS() as K8sObject] : []));

describe('the Helm chart (infra/helm), checked by helm built from its Go modules', () => {
  let helm: Awaited<ReturnType<typeof helmChart>>;
  beforeAll(async () => {
    helm = await helmChart();
  });
  afterAll(async () => {
    await helm?.cleanup();
  });

  it('helm lint finds nothing to warn about', async () => {
    const lint = await helm.lint();
    expect(lint.code, lint.stdout + lint.stderr).toBe(0);
    expect(lint.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(lint.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  });

  it('with its defaults it installs exactly the objects of infra/k8s/, field for field', async () => {
    const plain: K8sObject[] = [];
    for (const file of (await readdir(PLAIN)).filter((f) => f.endsWith('.yaml'))) plain.push(...parse(await readFile(join(PLAIN, file), 'utf8')));
    const rendered = await helm.template();
    expect(Object.keys(byKey(rendered)).sort()).toEqual(Object.keys(byKey(plain)).sort());
    expect(byKey(rendered)).toEqual(byKey(plain));
  });

  it('values change what they say: replicas, cluster, images, existing Secrets, no Redis CA, no NetworkPolicies, extra denied ranges', async () => {
    const objects = byKey(
      await helm.template([
        '--set',
        'router.replicas=3,agent.clusterId=east,agent.image=registry.local/agent:2,router.existingSecret=my-router,agent.existingSecret=my-agent,router.redisCa.enabled=false',
        '--set',
        'networkPolicies.extraDeniedCidrs={203.0.113.0/24,2001:db8::/32}',
      ]),
    );
    const deployment = objects['Deployment/bso/bso-router'] as unknown as {
      spec: { replicas: number; template: { spec: { volumes?: unknown; containers: Array<{ envFrom: unknown; env: Array<{ name: string }> }> } } };
    };
    expect(deployment.spec.replicas).toBe(3);
    expect(deployment.spec.template.spec.volumes).toBeUndefined();
    expect(deployment.spec.template.spec.containers[0]!.env.map((e) => e.name)).not.toContain('REDIS_TLS_CA_FILE');
    expect(deployment.spec.template.spec.containers[0]!.envFrom).toEqual([{ secretRef: { name: 'my-router' } }]);
    expect(objects['Secret/bso/bso-router']).toBeUndefined();
    expect(objects['Secret/bso/bso-redis-ca']).toBeUndefined();
    expect(objects['Secret/bso/bso-agent']).toBeUndefined();
    expect((objects['ConfigMap/bso/bso-agent'] as unknown as { data: Record<string, string> }).data.CLUSTER_ID).toBe('east');
    const internet = objects['NetworkPolicy/bso-sessions/browser-egress-internet'] as unknown as { spec: { egress: Array<{ to: Array<{ ipBlock: { except: string[] } }> }> } };
    expect(internet.spec.egress[0]!.to[0]!.ipBlock.except).toContain('203.0.113.0/24');
    expect(internet.spec.egress[0]!.to[1]!.ipBlock.except).toContain('2001:db8::/32');
    const off = byKey(await helm.template(['--set', 'networkPolicies.enabled=false']));
    expect(Object.keys(off).filter((k) => k.startsWith('NetworkPolicy/'))).toEqual([]);
  });
});
