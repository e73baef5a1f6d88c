// Four tiers, one runner. `npm test` (scripts/test.js) runs them in order after lint, typecheck
// and build; each tier can also run alone (`npm run test:unit`, ...).
const transform = { '^.+\\.ts$': ['@swc/jest'] };
const common = { transform, testEnvironment: 'node', moduleFileExtensions: ['ts', 'js', 'json'] };

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      ...common,
      displayName: 'unit',
      testMatch: ['<rootDir>/{apps,libs}/**/*.spec.ts', '<rootDir>/test/unit/**/*.spec.ts'],
    },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.int-spec.ts'],
    },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.e2e-spec.ts'] },
    // Faults, floods and hostile input (docs/RELIABILITY.md). CHAOS_SCALE=full (`npm run
    // test:chaos`) runs the counts the document reports; unset, the short form `npm test` runs.
    { ...common, displayName: 'chaos', testMatch: ['<rootDir>/test/chaos/**/*.chaos-spec.ts'] },
    // Attacks on the built daemons as processes (docs/RELIABILITY.md, "Attacks"): hostile jobs,
    // keyless peers, clients that never read. ATTACK_SCALE=full (`npm run test:attack`) runs the
    // counts the document reports; unset, the short form `npm test` runs.
    { ...common, displayName: 'attack', testMatch: ['<rootDir>/test/attack/**/*.attack-spec.ts'] },
  ],
};
