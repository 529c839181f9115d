"""Memory traffic of one step: bytes its kernels read and write, counted, not timed.

A loss over C = 100,000 classes is memory-bound: its time follows how many
times the (batch, classes) scores and their gradient go through memory. That
count does not depend on the machine's load, so it is the benchmarks' stable
companion to the timings.

* XLA (JAX, TensorFlow): ``hlo_bytes_accessed`` sums, over the instructions of
  the optimised program's entry computation (each fusion is one kernel), the
  bytes of their operands and results, as XLA's own cost analysis does for
  ``"bytes accessed"``. Views (``bitcast``, ``get-tuple-element``, ``tuple``),
  parameters and constants move nothing and are skipped.
* PyTorch eager: ``TorchTraffic`` is a ``TorchDispatchMode`` that adds the
  bytes of the input and output tensors of every ATen operator run inside it
  (forward and backward), skipping views (an output sharing its input's
  storage); a gather or index reads only the indexed entries, so only its
  index and output count.

Both count an operand once per kernel that reads it; caches are not modelled.
The numbers are for ratios between programs of the same backend (a loss over
cross-entropy), not across backends: each backend fuses differently.
"""

import re

__all__ = ["hlo_bytes_accessed", "TorchTraffic"]

_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                  "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$")
_MOVES_NOTHING = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _shape_bytes(text):
    """Bytes of every array shape written in ``text`` (a tuple shape: their sum)."""
    total = 0
    for element, dims in _SHAPE.findall(text):
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        total += count * _ELEMENT_BYTES[element]
    return total


def hlo_bytes_accessed(hlo_text):
    """Bytes read and written by the entry computation of an optimised HLO module.

    Args:
        hlo_text: the module's text (``jax.jit(f).lower(...).compile().as_text()``,
            TensorFlow's ``experimental_get_compiler_ir(...)(stage="optimized_hlo")``).

    Returns:
        The sum over the entry computation's instructions of operand and result
        bytes (``ValueError`` if the text has no entry computation).
    """
    start = hlo_text.find("\nENTRY")
    if start < 0:
        raise ValueError("no ENTRY computation in the HLO text")
    sizes, total = {}, 0
    for line in hlo_text[start:].splitlines()[1:]:
        if line.strip() == "}":
            break
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode, rest = match.groups()
        sizes[name] = _shape_bytes(shape)
        if opcode in _MOVES_NOTHING:
            continue
        operands = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])
        total += sizes[name] + sum(sizes.get(operand, 0) for operand in operands)
    return total


def _torch_dispatch_mode():
    from torch.utils._python_dispatch import TorchDispatchMode
    return TorchDispatchMode


class TorchTraffic:
    """Context manager counting the bytes ATen operators read and write.

    ``with TorchTraffic() as traffic: ...`` then ``traffic.bytes`` (and
    ``traffic.operators``, the number of non-view operators run).
    """

    def __init__(self):
        import torch
        from torch.utils._pytree import tree_flatten

        counter = self

        class Mode(_torch_dispatch_mode()):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = [t for t in tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor)]
                outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
                storages = {t.untyped_storage().data_ptr() for t in inputs}
                if outputs and all(t.untyped_storage().data_ptr() in storages
                                   for t in outputs):
                    return out  # a view: nothing moves
                name = str(func)
                if "gather" in name or "index" in name:
                    inputs = inputs[1:]  # the indexed tensor is read only where indexed
                counter.bytes += sum(t.numel() * t.element_size() for t in inputs + outputs)
                counter.operators += 1
                return out

        self._mode = Mode()
        self.bytes = 0
        self.operators = 0

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
