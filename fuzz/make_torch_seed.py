# Writes fuzz/seeds/torch_small.bin: a small torch.save-like zip (protocol 2 pickle through Python's
# own pickler, stored members written by Python's zipfile) without torch installed. It exercises
# what the fixture does not: an OrderedDict root, a strided view, an offset bf16 tensor.
# Usage: python3 fuzz/make_torch_seed.py fuzz/seeds/torch_small.bin
import io, pickle, struct, sys, types, zipfile, collections

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils
def make_class(module, name):
    cls = type(name, (), {}); cls.__module__ = module.__name__; cls.__qualname__ = name
    setattr(module, name, cls); return cls
Float = make_class(torch, "FloatStorage"); BF16 = make_class(torch, "BFloat16Storage")
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"; utils._rebuild_tensor_v2 = _rebuild_tensor_v2

class Storage:
    def __init__(self, cls, key, numel): self.cls, self.key, self.numel = cls, key, numel
class T:
    def __init__(self, storage, offset, size, stride): self.args = (storage, offset, size, stride, False, collections.OrderedDict())
    def __reduce__(self): return (_rebuild_tensor_v2, self.args)
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage): return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None

s0 = Storage(Float, "0", 6); s1 = Storage(BF16, "1", 4)
emb = T(s0, 0, (2, 3), (3, 1))
state = collections.OrderedDict([("backbone.embedding.weight", emb), ("t", T(s0, 0, (3, 2), (1, 3))),
                                 ("h", T(s1, 1, (3,), (1,))), ("lm_head.weight", emb)])
buf = io.BytesIO(); P(buf, protocol=2).dump(state)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/data/0", struct.pack("<6f", 1, -2, 3, 4.5, 5, -6))
    z.writestr("archive/data/1", struct.pack("<4H", 0x3fc0, 0xc040, 0x4000, 0x3f80))
