"""TensorRT plugin fields as the ONNX parser and a deserialised engine hand them to a creator:
(name, ``nvinfer1::PluginFieldType`` code, raw bytes, element count), built and read with ctypes.
The codes are NvInferPluginBase.h's."""

from __future__ import annotations

import ctypes

# nvinfer1::PluginFieldType
FLOAT32, INT8, INT16, INT32, CHAR, INT64 = 1, 3, 4, 5, 6, 10
# Ctypes views of the numeric field types the tests write and read.
FIELD_CTYPES = {INT8: ctypes.c_int8, INT16: ctypes.c_int16, INT32: ctypes.c_int32, INT64: ctypes.c_int64, FLOAT32: ctypes.c_float}

# What the ONNX exporter writes: the parser reads int attributes as kINT32, string ones as kCHAR.
ONNX_ATTRIBUTE_TYPES = {"delta_softplus": INT32, "scan_order": CHAR, "height": INT32, "width": INT32}

Field = tuple[str, int, bytes, int]


def int_field(name: str, value: int, kind: int = INT32) -> Field:
    return (name, kind, bytes(FIELD_CTYPES[kind](value)), 1)


def str_field(name: str, text: str, nul: bool = False) -> Field:
    data = text.encode() + (b"\0" if nul else b"")
    return (name, CHAR, data, len(data))


def field_arrays(fields: list[Field]):
    """ctypes arrays (names, data pointers, types, lengths) of ``fields``, plus the buffers that
    must stay alive while they are used."""
    buffers = [ctypes.create_string_buffer(data, max(len(data), 1)) for _, _, data, _ in fields]
    names = (ctypes.c_char_p * len(fields))(*[name.encode() for name, *_ in fields])
    data = (ctypes.c_void_p * len(fields))(*[ctypes.addressof(b) for b in buffers])
    types = (ctypes.c_int32 * len(fields))(*[kind for _, kind, _, _ in fields])
    lengths = (ctypes.c_int32 * len(fields))(*[length for *_, length in fields])
    return names, data, types, lengths, buffers


def read_field(name: bytes, data: int, kind: int, length: int) -> Field:
    """A field TensorRT would read back from a plugin, copied out of the plugin's memory."""
    size = length if kind == CHAR else length * ctypes.sizeof(FIELD_CTYPES[kind])
    return (name.decode(), kind, ctypes.string_at(data, size), length)
