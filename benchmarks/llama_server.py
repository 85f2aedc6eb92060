"""llama-server for the benchmarks and tests: the runtime of llm2llm's GGUF teacher (src/llm2llm/llamacpp.py).

    python benchmarks/llama_server.py            # build (once; cached in ~/.cache/llm2llm) and print its path
"""
from llm2llm.llamacpp import find_or_build, free_port, serve  # noqa: F401

if __name__ == "__main__":
    print(find_or_build())
