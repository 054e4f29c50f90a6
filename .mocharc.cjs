// Tests run against the real local stack (npm run stack:up); see tests/setup.ts.
module.exports = {
  'node-option': ['import=tsx'],
  spec: ['tests/**/*.test.ts'],
  require: ['tests/setup.ts'],
  reporter: 'tests/reporter.cjs',
  timeout: 120000,
  exit: true,
};
