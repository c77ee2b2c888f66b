// The private-access suite again, with two serving processes in front of the main one: what a
// serving process learns for one credential must never answer another (src/serving/plans.ts).
process.env['GANTRY_TEST_WORKERS'] = '2';
await import('./private-access.test.ts');
