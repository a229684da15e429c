#!/usr/bin/env python3
"""Loads a checkpoint written by `mambacpp train` into transformers' MambaForCausalLM and compares
its logits with the ones `mambacpp forward` wrote for the same ids.

    check_transformers.py MODEL_DIR IDS_FILE LOGITS.safetensors

transformers exists only on the GPU machine, so this runs there (scripts/gpu/run.sh transformers);
the model runs in float32 on the CPU so that only the two implementations differ.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import MambaForCausalLM


def main() -> int:
    model_dir, ids_file, logits_file = sys.argv[1:4]
    ids = [int(t) for t in open(ids_file).read().replace(",", " ").split()]
    ours = load_file(logits_file)["logits"].double()
    model = MambaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    # Every tensor of the file must arrive unchanged (a loader that re-initialises one would hide here).
    stored = load_file(f"{model_dir}/model.safetensors")
    loaded = model.state_dict()
    for name, tensor in stored.items():
        if name not in loaded:
            print(f"FAIL: {name} is not a parameter of MambaForCausalLM")
            return 1
        if not torch.equal(loaded[name].float(), tensor.float()):
            diff = (loaded[name].float() - tensor.float()).abs().max().item()
            print(f"FAIL: {name} changed on loading (max abs difference {diff:.3e})")
            return 1
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].double()
    if theirs.shape != ours.shape:
        print(f"FAIL: transformers logits {tuple(theirs.shape)}, ours {tuple(ours.shape)}")
        return 1
    rel = ((theirs - ours).norm() / theirs.norm()).item()
    same_argmax = bool((theirs.argmax(-1) == ours.argmax(-1)).all())
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}: "
          f"logits {tuple(theirs.shape)}, relative error {rel:.3e}, argmax identical: {same_argmax}")
    ok = rel < 1e-5 and same_argmax and torch.isfinite(theirs).all()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
