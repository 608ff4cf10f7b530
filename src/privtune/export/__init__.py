"""`privtune export`: a model artifact -> merged safetensors (vLLM) or GGUF files (llama.cpp, Ollama),
verified against the model they came from."""
