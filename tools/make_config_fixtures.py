#!/usr/bin/env python3
"""Writes config.json files exactly as Hugging Face transformers saves a
GptOssConfig (transformers v5 writes `rope_parameters` instead of
`rope_scaling`), for tests/test_config.c to parse.

    python3 tools/make_config_fixtures.py   # writes tests/fixtures/gpt_oss/config_v5_*.json
"""
import json
import os
import shutil
import sys
import tempfile

from transformers import GptOssConfig, __version__ as tf_version

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gpt_oss")

SHAPES = {
    # The published gpt-oss-20b shape (class defaults are 120b-like; set 24 layers, 32 experts).
    "config_v5_20b.json": dict(num_hidden_layers=24, num_local_experts=32),
    # The shape of `mxlora tiny --preset test`.
    "config_v5_tiny.json": dict(num_hidden_layers=3, num_local_experts=4, num_experts_per_tok=2,
                                hidden_size=128, intermediate_size=128, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=32, sliding_window=8,
                                vocab_size=1088),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, kwargs in SHAPES.items():
        tmp = tempfile.mkdtemp()
        try:
            GptOssConfig(**kwargs).save_pretrained(tmp)
            with open(os.path.join(tmp, "config.json")) as f:
                text = f.read()
        finally:
            shutil.rmtree(tmp)
        json.loads(text)
        with open(os.path.join(OUT, name), "w") as f:
            f.write(text)
        print(f"wrote {name} (transformers {tf_version})")


if __name__ == "__main__":
    sys.exit(main())
