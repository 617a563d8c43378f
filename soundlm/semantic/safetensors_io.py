"""Reading `.safetensors` files with numpy alone (no PyTorch, no extra package).

Format: an 8-byte little-endian header length, a JSON header mapping each
tensor name to its dtype, shape and byte range, then the raw data.
"""
import json
import os

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
  return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file as numpy arrays (bfloat16 -> float32)."""
  path = os.fspath(path)
  blob = np.memmap(path, dtype=np.uint8, mode="r")
  if len(blob) < 8:
    raise ValueError(f"{path}: not a safetensors file (only {len(blob)} bytes)")
  header_size = int.from_bytes(blob[:8].tobytes(), "little")
  if header_size > len(blob) - 8:
    raise ValueError(f"{path}: not a safetensors file (header of {header_size} bytes "
                     f"in a {len(blob)}-byte file)")
  try:
    header = json.loads(blob[8:8 + header_size].tobytes())
  except ValueError as e:
    raise ValueError(f"{path}: not a safetensors file (unreadable header: {e})") from e
  data = blob[8 + header_size:]
  tensors = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    if end > len(data) or start > end:
      raise ValueError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
    if dtype == "BF16":
      array = _bfloat16_to_float32(data[start:end].view(np.uint16))
    elif dtype in _DTYPES:
      array = data[start:end].view(_DTYPES[dtype])
    else:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
    if array.size != int(np.prod(shape, dtype=np.int64)):
      raise ValueError(f"{path}: tensor {name!r}: {array.size} values for shape {shape}")
    tensors[name] = np.array(array.reshape(shape))  # copy out of the memory map
  return tensors
