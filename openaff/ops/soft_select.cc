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
//
// Attributes, each saving a pass over a map or a layout conversion in the residual blocks:
//   scale         the factor in front (2 for AFF, 1 for iAFF);
//   y_is_sum=1    the fourth input is s = x + y, the map the attention already read: y = s - x.
//                 For shortcuts that oneDNN left in a layout whose conversion is slow; the
//                 blocks do not use it (one rounding apart from y, see README "Speed").
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "attributes.h"
#include "mxnet/lib_api.h"
#include "sigmoid.h"

using namespace mxnet::ext;
using openaff::sigmoid;
using openaff::Sigmoid;

namespace {

struct Options {
  float scale = 1.0f;
  bool y_is_sum = false;
};

Options options_of(const openaff::Attributes& attrs) {
  return {openaff::number(attrs, "scale", 1.0f), openaff::flag(attrs, "y_is_sum")};
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

// One pass over the planes; the options are template arguments so that every combination
// compiles to its own branch-free vector loop.
template <bool YIsSum>
void forward_planes(const Geometry& g, float scale, const float* local, const float* global,
                    const float* x, const float* fourth, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.planes; ++plane) {
    const int64_t begin = plane * g.area;
    const float bias = global[plane];
#pragma omp simd
    for (int64_t i = begin; i < begin + g.area; ++i) {
      const float w = sigmoid(local[i] + bias).w;
      const float y = YIsSum ? fourth[i] - x[i] : fourth[i];
      out[i] = scale * (y + w * (x[i] - y));
    }
  }
}

template <bool YIsSum>
void backward_planes(const Geometry& g, float scale, const float* d_out,
                     const float* local, const float* global, const float* x,
                     const float* fourth, float* d_local, float* d_global,
                     float* d_x, float* d_fourth) {
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < g.planes; ++plane) {
    const int64_t begin = plane * g.area;
    const float bias = global[plane];
    double plane_sum = 0.0;  // the global logit's gradient: a sum over the plane
#pragma omp simd reduction(+ : plane_sum)
    for (int64_t i = begin; i < begin + g.area; ++i) {
      const Sigmoid s = sigmoid(local[i] + bias);
      const float y = YIsSum ? fourth[i] - x[i] : fourth[i];
      const float grad = scale * d_out[i];
      const float d_y = grad - grad * s.w;
      d_x[i] = YIsSum ? grad * s.w - d_y : grad * s.w;  // with y = s - x, s gets y's gradient
      d_fourth[i] = d_y;
      const float d_logit = grad * (x[i] - y) * s.slope;
      d_local[i] = d_logit;
      plane_sum += d_logit;
    }
    d_global[plane] = static_cast<float>(plane_sum);
  }
}

template <typename Kernel>
void dispatch(const Options& o, Kernel&& kernel) {
  if (o.y_is_sum) kernel(std::true_type{});
  else kernel(std::false_type{});
}

MXReturnValue forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Options o = options_of(attrs);
  const float* in[4];
  for (int k = 0; k < 4; ++k) in[k] = inputs->at(k).data<float>();
  float* out = outputs->at(0).data<float>();
  const Geometry g = geometry_of(inputs->at(0));
  dispatch(o, [&](auto y_is_sum) {
    forward_planes<decltype(y_is_sum)::value>(
        g, o.scale, in[0], in[1], in[2], in[3], out);
  });
  return MX_SUCCESS;
}

// inputs: d_out, local, global, x, y, out (the output is unused)
// outputs: d_local, d_global, d_x, d_y (d_s when y_is_sum)
MXReturnValue backward(const std::unordered_map<std::string, std::string>& attrs,
                       std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  const Options o = options_of(attrs);
  const float* in[4];
  for (int k = 0; k < 4; ++k) in[k] = inputs->at(1 + k).data<float>();
  float* d_in[4];
  for (int k = 0; k < 4; ++k) d_in[k] = outputs->at(k).data<float>();
  const Geometry g = geometry_of(inputs->at(1));
  dispatch(o, [&](auto y_is_sum) {
    backward_planes<decltype(y_is_sum)::value>(
        g, o.scale, inputs->at(0).data<float>(), in[0], in[1], in[2], in[3],
        d_in[0], d_in[1], d_in[2], d_in[3]);
  });
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string>&,
                          int* num_in, int* num_out) {
  *num_in = 4;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const openaff::Attributes&, std::vector<int>* in_types,
                         std::vector<int>* out_types) {
  return openaff::float32_only("openaff_soft_select", in_types, out_types);
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
