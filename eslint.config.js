import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      // One config loader per process reads the environment (shared/node-env.ts); nothing else may.
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'read configuration through shared/node-env.ts and the config loaders' }],
    },
  },
  {
    files: ['test/**', 'harness/**', 'bench/**', 'infra/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', 'no-restricted-properties': 'off' },
  },
);
