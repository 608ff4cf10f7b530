#!/usr/bin/env bash
# make fresh-check: clone the committed tree into an empty temp dir (no .venv, no ../shared) and run the
# README's two commands there exactly as the README writes them, each timed. Logs stay beside the clone.
set -euo pipefail
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/privtune-fresh.XXXXXX")
git clone -q "$SOURCE" "$WORK/privtune"
cd "$WORK/privtune"
# the commands: the lines of the README's "## The two commands" code block, comments dropped
mapfile -t COMMANDS < <(awk '/^## The two commands/{on=1} on&&/^```bash/{code=1;next} code&&/^```/{exit} code' README.md \
                        | sed 's/#.*//; s/[[:space:]]*$//' | grep -v '^$')
echo "fresh clone of $(git rev-parse --short HEAD) in $WORK/privtune; commands: ${COMMANDS[*]}"
status=0
for command in "${COMMANDS[@]}"; do
  log="$WORK/$(echo "$command" | tr ' ' '-').log"
  start=$(date +%s)
  if bash -c "$command" >"$log" 2>&1; then result=ok; else result=FAILED; status=1; fi
  echo "$command: $result in $(( $(date +%s) - start )) s (log: $log)"
  tail -3 "$log" | sed 's/^/    /'
done
exit $status
