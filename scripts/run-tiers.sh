#!/usr/bin/env bash
# Run the named test tiers in turn, time each and end with one summary line, also when a tier
# fails (the tiers after it are then not run, as with `a && b`):
#   npm test            -> typecheck unit integration e2e
#   npm run test:quick  -> typecheck unit
# A tier is the npm script `test:<tier>`, or `<tier>` itself for typecheck and lint.
# With GANTRY_TEST_COVERAGE=1 (.ci/run sets it) the integration tier is `test:coverage` instead:
# unit and integration under Node's coverage, which prints a table for src/ at its end.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
  echo "usage: scripts/run-tiers.sh TIER... (e.g. typecheck unit integration e2e)" >&2
  exit 2
fi

now_ms() { date +%s%3N; }
secs() { printf '%d.%d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

summary=()
failed=''
t_all=$(now_ms)
for tier in "$@"; do
  case $tier in
    typecheck | lint) script=$tier ;;
    integration) script=test:integration; [ "${GANTRY_TEST_COVERAGE:-}" = 1 ] && script=test:coverage ;;
    *) script=test:$tier ;;
  esac
  echo "=== tier $tier: npm run $script"
  t0=$(now_ms)
  npm run -s "$script"
  rc=$?
  took=$(($(now_ms) - t0))
  summary+=("$tier $(secs "$took")$([ "$rc" -ne 0 ] && echo ' FAILED')")
  echo "=== tier $tier: $(secs "$took"), exit $rc"
  if [ "$rc" -ne 0 ]; then
    failed=$tier
    break
  fi
done
line=$(IFS=,; echo "${summary[*]}" | sed 's/,/, /g')
echo "=== tiers: ${line}; total $(secs $(($(now_ms) - t_all)))${failed:+ (stopped at $failed)}"
[ -z "$failed" ]
