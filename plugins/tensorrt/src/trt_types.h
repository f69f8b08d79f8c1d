// Conversions between TensorRT's types and plugin_core's TensorRT-free twins.
#pragma once

#include <cstdint>

#include "NvInferRuntime.h"
#include "attributes.h"
#include "op_rules.h"

static_assert(NV_TENSORRT_MAJOR >= 10, "the vmddpm plugins are IPluginV3 plugins: TensorRT 10 or newer");

namespace vmddpm::trt {

// plugin_core::FieldType copies nvinfer1::PluginFieldType value for value, so fields cross by a cast.
#define VMDDPM_SAME_FIELD_TYPE(core_name, trt_name)                                       \
  static_assert(static_cast<int32_t>(plugin_core::FieldType::core_name) ==                 \
                    static_cast<int32_t>(nvinfer1::PluginFieldType::trt_name),             \
                "plugin_core::FieldType::" #core_name " differs from PluginFieldType::" #trt_name)
VMDDPM_SAME_FIELD_TYPE(kFloat16, kFLOAT16);
VMDDPM_SAME_FIELD_TYPE(kFloat32, kFLOAT32);
VMDDPM_SAME_FIELD_TYPE(kFloat64, kFLOAT64);
VMDDPM_SAME_FIELD_TYPE(kInt8, kINT8);
VMDDPM_SAME_FIELD_TYPE(kInt16, kINT16);
VMDDPM_SAME_FIELD_TYPE(kInt32, kINT32);
VMDDPM_SAME_FIELD_TYPE(kChar, kCHAR);
VMDDPM_SAME_FIELD_TYPE(kDims, kDIMS);
VMDDPM_SAME_FIELD_TYPE(kUnknown, kUNKNOWN);
VMDDPM_SAME_FIELD_TYPE(kBFloat16, kBF16);
VMDDPM_SAME_FIELD_TYPE(kInt64, kINT64);
#undef VMDDPM_SAME_FIELD_TYPE

inline plugin_core::FieldView to_core(const nvinfer1::PluginField& field) {
  return {field.name, field.data, static_cast<plugin_core::FieldType>(field.type), field.length};
}

inline nvinfer1::PluginField to_trt(const plugin_core::FieldView& field) {
  return nvinfer1::PluginField(field.name, field.data, static_cast<nvinfer1::PluginFieldType>(field.type),
                               field.length);
}

inline plugin_core::TensorType to_core(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return plugin_core::TensorType::kFloat32;
    case nvinfer1::DataType::kHALF: return plugin_core::TensorType::kFloat16;
    case nvinfer1::DataType::kBF16: return plugin_core::TensorType::kBFloat16;
    default: return plugin_core::TensorType::kOther;
  }
}

// Only ever called on a type to_core() accepted (plugin_core::io_type checked it).
inline nvinfer1::DataType to_trt(plugin_core::TensorType type) {
  switch (type) {
    case plugin_core::TensorType::kFloat16: return nvinfer1::DataType::kHALF;
    case plugin_core::TensorType::kBFloat16: return nvinfer1::DataType::kBF16;
    default: return nvinfer1::DataType::kFLOAT;
  }
}

// TensorRT marks an extent unknown at build time with -1, as plugin_core does.
inline plugin_core::Shape to_core(const nvinfer1::Dims& dims) {
  plugin_core::Shape shape;
  for (int32_t axis = 0; axis < dims.nbDims; ++axis) {
    shape.push_back(dims.d[axis] < 0 ? plugin_core::kDynamicDim : dims.d[axis]);
  }
  return shape;
}

}  // namespace vmddpm::trt
