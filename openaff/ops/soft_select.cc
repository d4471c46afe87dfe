// Fused soft selection of Attentional Feature Fusion (Dai et al., WACV 2021, Sec. 3.3):
//
//   out = scale * (y + sigmoid(local + global) * (x - y))
//
// Inputs in the order local, global, x, y. local, x, y: (N, C, *spatial); global: (N, C, 1, ...),
// one logit per sample and channel. The attention branches come first so that MXNet's
// depth-first graph order runs them (and the sum x + y they read) before x and y are converted
// to the plain layout this operator needs.
// One pass over the maps instead of the five or six broadcast operators of the Python form,
// each of which would make MXNet reorder its oneDNN-layout inputs again. Loaded into MXNet with
// mxnet.library.load (MXNet's extension library API, include/mxnet/lib_api.h).
#include <cmath>
#include <cstdint>
#include <string>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

float scale_of(const std::unordered_map<std::string, std::string>& attrs) {
  auto found = attrs.find("scale");
  return found == attrs.end() ? 1.0f : std::stof(found->second);
}

// planes = N*C, each plane holds `area` elements sharing one global logit
struct Geometry {
  int64_t planes;
  int64_t area;
};

Geometry geometry_of(const MXTensor& map) {
  Geometry g{map.shape[0] * map.shape[1], 1};
  for (size_t axis = 2; axis < map.shape.size(); ++axis) g.area *= map.shape[axis];
  return g;
}

inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

MXReturnValue forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const float scale = scale_of(attrs);
  const float* local = inputs->at(0).data<float>();
  const float* global = inputs->at(1).data<float>();
  const float* x = inputs->at(2).data<float>();
  const float* y = inputs->at(3).data<float>();
  float* out = outputs->at(0).data<float>();
  const Geometry g = geometry_of(inputs->at(0));
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.planes; ++plane) {
    const int64_t begin = plane * g.area;
    const float bias = global[plane];
#pragma omp simd
    for (int64_t i = begin; i < begin + g.area; ++i) {
      const float w = sigmoid(local[i] + bias);
      out[i] = scale * (y[i] + w * (x[i] - y[i]));
    }
  }
  return MX_SUCCESS;
}

// inputs: d_out, local, global, x, y, out; outputs: d_local, d_global, d_x, d_y
MXReturnValue backward(const std::unordered_map<std::string, std::string>& attrs,
                       std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  const float scale = scale_of(attrs);
  const float* d_out = inputs->at(0).data<float>();
  const float* local = inputs->at(1).data<float>();
  const float* global = inputs->at(2).data<float>();
  const float* x = inputs->at(3).data<float>();
  const float* y = inputs->at(4).data<float>();
  float* d_local = outputs->at(0).data<float>();
  float* d_global = outputs->at(1).data<float>();
  float* d_x = outputs->at(2).data<float>();
  float* d_y = outputs->at(3).data<float>();
  const Geometry g = geometry_of(inputs->at(1));
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.planes; ++plane) {
    const int64_t begin = plane * g.area;
    const float bias = global[plane];
    float plane_sum = 0.0f;
#pragma omp simd reduction(+ : plane_sum)
    for (int64_t i = begin; i < begin + g.area; ++i) {
      const float w = sigmoid(local[i] + bias);
      const float grad = scale * d_out[i];
      d_x[i] = grad * w;
      d_y[i] = grad - grad * w;
      const float d_logit = grad * (x[i] - y[i]) * w * (1.0f - w);
      d_local[i] = d_logit;
      plane_sum += d_logit;
    }
    d_global[plane] = plane_sum;
  }
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string>& attrs,
                          int* num_in, int* num_out) {
  *num_in = 4;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const std::unordered_map<std::string, std::string>&,
                         std::vector<int>* in_types, std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    if (in_types->at(i) != kFloat32) {
      MX_ERROR_MSG << "openaff_soft_select supports float32 only; input " << i
                   << " has type code " << in_types->at(i);
      return MX_FAIL;
    }
  }
  out_types->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const std::unordered_map<std::string, std::string>&,
                          std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const auto& x = in_shapes->at(2);
  if (x.size() < 2 || in_shapes->at(0) != x || in_shapes->at(3) != x) {
    MX_ERROR_MSG << "openaff_soft_select: local, x and y must have one shape (N, C, ...)";
    return MX_FAIL;
  }
  const auto& global = in_shapes->at(1);
  bool per_channel = global.size() == x.size() && global[0] == x[0] && global[1] == x[1];
  for (size_t axis = 2; per_channel && axis < global.size(); ++axis) {
    per_channel = global[axis] == 1;
  }
  if (!per_channel) {
    MX_ERROR_MSG << "openaff_soft_select: global must have shape (N, C, 1, ...) matching x";
    return MX_FAIL;
  }
  out_shapes->at(0) = x;
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(openaff_soft_select)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape);

MXReturnValue initialize(int version) {
  if (version < 10700) {
    MX_ERROR_MSG << "openaff native operators need MXNet >= 1.7, found " << version;
    return MX_FAIL;
  }
  return MX_SUCCESS;
}
