// A whole MS-CAM soft selection of Attentional Feature Fusion (Dai et al., WACV 2021,
// Sec. 3.2-3.3) for inference, in two passes over the maps:
//
//   out = scale * (y + sigmoid(L(s) + G(s)) * (x - y)),
//   L(s) = BN(conv1x1(ReLU(BN(conv1x1(s)))))           per pixel (local context)
//   G(s) = BN(conv1x1(ReLU(BN(conv1x1(mean_hw(s))))))  per sample and channel (global context)
//
// with every BatchNorm on its running statistics, folded into the convolution before it.
// At CIFAR widths (16 -> 4 -> 16 channels) the attention's convolutions, BatchNorms, pooling
// and copies each made a pass over a map for a few multiply-adds; here pass 1 pools s and
// runs the global branch, pass 2 runs the local branch on tiles of pixels held in cache and
// writes the selection. Used by the fusion blocks only in graphs that never record
// gradients (its backward is an error); training keeps MXNet's BatchNorm with batch statistics.
//
// Inputs: [source,] x, y, then per branch (local, then global) conv1 weight, conv1 bias, BN1
// gamma, beta, running mean, running var, conv2 weight, conv2 bias, BN2 gamma, beta, running
// mean, running var. Attributes:
//   scale       the factor in front (2 for AFF, 1 for iAFF);
//   sum_source  s = x + y, computed on the fly (no source input); else s is the first input;
//   eps         the BatchNorms' epsilon.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attributes.h"
#include "mxnet/lib_api.h"
#include "sigmoid.h"

using namespace mxnet::ext;

namespace {

constexpr int kBranchInputs = 12;
typedef float Vec __attribute__((vector_size(64)));  // 16 floats; two AVX2 registers elsewhere
constexpr int kLanes = 16;
// A tile's rows are read from each channel plane as one run of up to kTile pixels: shorter
// runs from many planes at once left the hardware prefetcher behind (40 % of the time in
// loads). Wide sources get shorter tiles, so that a tile stays within kTileFloats (in L2).
// The products then run on chunks of kChunk pixels, kBlock output channels at a time, whose
// kBlock x kVecs accumulators stay in registers.
constexpr int64_t kTile = 256;
constexpr int64_t kTileFloats = 64 * 1024;
constexpr int64_t kChunk = 32;
constexpr int kVecs = kChunk / kLanes;
constexpr int kBlock = 4;

int64_t tile_pixels(int64_t source_channels) {
  return std::clamp<int64_t>(kTileFloats / source_channels / kChunk * kChunk, kChunk, kTile);
}

struct Options {
  float scale = 1.0f;
  bool sum_source = false;
  float eps = 1e-5f;
};

Options options_of(const openaff::Attributes& attrs) {
  return {openaff::number(attrs, "scale", 1.0f), openaff::flag(attrs, "sum_source"),
          openaff::number(attrs, "eps", 1e-5f)};
}

int64_t round_up(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// conv1x1 followed by inference BatchNorm as one affine map, rows padded with zeros to a
// multiple of kBlock so that every block of output channels is full.
struct Affine {
  int64_t out = 0, in = 0, rows = 0;
  std::vector<float> weight;  // rows x in
  std::vector<float> bias;    // rows
};

Affine fold(MXTensor* t, float eps) {
  Affine a;
  a.out = t[0].shape[0];
  a.in = t[0].shape[1];
  a.rows = round_up(a.out);
  a.weight.assign(a.rows * a.in, 0.0f);
  a.bias.assign(a.rows, 0.0f);
  const float *w = t[0].data<float>(), *b = t[1].data<float>(), *gamma = t[2].data<float>(),
              *beta = t[3].data<float>(), *mean = t[4].data<float>(), *var = t[5].data<float>();
  for (int64_t o = 0; o < a.out; ++o) {
    const float k = gamma[o] / std::sqrt(var[o] + eps);
    for (int64_t i = 0; i < a.in; ++i) a.weight[o * a.in + i] = w[o * a.in + i] * k;
    a.bias[o] = (b[o] - mean[o]) * k + beta[o];
  }
  return a;
}

// The second layer reads a padded hidden vector: widen its columns to the first's rows.
Affine widen(Affine a, int64_t in) {
  std::vector<float> weight(a.rows * in, 0.0f);
  for (int64_t o = 0; o < a.out; ++o) {
    std::copy(a.weight.begin() + o * a.in, a.weight.begin() + (o + 1) * a.in,
              weight.begin() + o * in);
  }
  a.weight.swap(weight);
  a.in = in;
  return a;
}

struct Branch {
  Affine first, second;
};

Branch branch_of(MXTensor* t, float eps) {
  Branch b{fold(t, eps), fold(t + 6, eps)};
  b.second = widen(b.second, b.first.rows);
  return b;
}

struct Maps {
  const float *source, *x, *y;  // source is unused when s = x + y
  float* out;
  int64_t batch, source_channels, channels, area;
};

// s at a flat index; a template argument, so that every loop reading it stays branch-free
template <bool SumSource>
inline float source_at(const Maps& m, int64_t index) {
  return SumSource ? m.x[index] + m.y[index] : m.source[index];
}

// Pass 1: the mean of every source plane, then the global branch per sample. Returns, per
// sample and output channel, the global logit plus the local branch's last bias.
template <bool SumSource>
std::vector<float> global_logits(const Maps& m, const Branch& global, const Branch& local) {
  const int64_t planes = m.batch * m.source_channels;
  std::vector<float> pooled(planes);
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    float total = 0.0f;
    const int64_t begin = plane * m.area;
#pragma omp simd reduction(+ : total)
    for (int64_t i = begin; i < begin + m.area; ++i) total += source_at<SumSource>(m, i);
    pooled[plane] = total / static_cast<float>(m.area);
  }
  const int64_t rows = local.second.rows, hidden_rows = global.first.rows;
  std::vector<float> logits(m.batch * rows, 0.0f);
  // the reductions are declared to OpenMP so that they vectorise (reassociated) without
  // -ffast-math: as scalar chains they cost as much as the whole local branch at 2048 channels
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < m.batch; ++n) {
    const float* p = pooled.data() + n * m.source_channels;
    std::vector<float> hidden(hidden_rows);
    for (int64_t k = 0; k < hidden_rows; ++k) {
      const float* w = global.first.weight.data() + k * m.source_channels;
      float z = 0.0f;
#pragma omp simd reduction(+ : z)
      for (int64_t c = 0; c < m.source_channels; ++c) z += w[c] * p[c];
      z += global.first.bias[k];
      hidden[k] = z > 0.0f ? z : 0.0f;
    }
    for (int64_t o = 0; o < m.channels; ++o) {
      const float* w = global.second.weight.data() + o * global.second.in;
      float z = 0.0f;
#pragma omp simd reduction(+ : z)
      for (int64_t k = 0; k < hidden_rows; ++k) z += w[k] * hidden[k];
      logits[n * rows + o] = z + global.second.bias[o] + local.second.bias[o];
    }
  }
  return logits;
}

// rows [0, kBlock) of weight (each `in` long) times `in` rows of a chunk, `stride` vectors apart
inline void block_product(const float* weight, int64_t in, const Vec* rows, int64_t stride,
                          Vec acc[kBlock][kVecs]) {
  for (int64_t i = 0; i < in; ++i) {
    Vec v[kVecs];
    for (int q = 0; q < kVecs; ++q) v[q] = rows[i * stride + q];
    for (int j = 0; j < kBlock; ++j) {
      const float w = weight[j * in + i];
      for (int q = 0; q < kVecs; ++q) acc[j][q] += w * v[q];
    }
  }
}

template <bool SumSource>
void load_tile(const Maps& m, int64_t n, int64_t begin, int64_t count, int64_t stride,
               Vec* source) {
  for (int64_t c = 0; c < m.source_channels; ++c) {
    float* row = reinterpret_cast<float*>(source + c * stride);
    const int64_t base = (n * m.source_channels + c) * m.area + begin;
#pragma omp simd
    for (int64_t p = 0; p < count; ++p) row[p] = source_at<SumSource>(m, base + p);
    for (int64_t p = count; p < (count + kChunk - 1) / kChunk * kChunk; ++p) row[p] = 0.0f;
  }
}

// The local branch and the selection for the chunk of `count` pixels at `begin` (sample n),
// whose source rows start at `source`.
void chunk_select(const Maps& m, const Branch& local, const float* logits, float scale,
                  int64_t n, int64_t begin, int64_t count, const Vec* source, int64_t stride,
                  Vec* hidden) {
  for (int64_t k = 0; k < local.first.rows; k += kBlock) {
    Vec acc[kBlock][kVecs];
    for (int j = 0; j < kBlock; ++j)
      for (int q = 0; q < kVecs; ++q) acc[j][q] = local.first.bias[k + j] + Vec{};
    block_product(local.first.weight.data() + k * local.first.in, local.first.in, source,
                  stride, acc);
    for (int j = 0; j < kBlock; ++j)
      for (int q = 0; q < kVecs; ++q)
        hidden[(k + j) * kVecs + q] = acc[j][q] > 0.0f ? acc[j][q] : Vec{};
  }
  const int64_t rows = local.second.rows;
  for (int64_t o = 0; o < m.channels; o += kBlock) {
    Vec acc[kBlock][kVecs];
    for (int j = 0; j < kBlock; ++j)
      for (int q = 0; q < kVecs; ++q) acc[j][q] = logits[n * rows + o + j] + Vec{};
    block_product(local.second.weight.data() + o * local.second.in, local.second.in, hidden,
                  kVecs, acc);
    for (int j = 0; j < kBlock && o + j < m.channels; ++j) {
      const float* z = reinterpret_cast<const float*>(acc[j]);
      const int64_t base = (n * m.channels + o + j) * m.area + begin;
#pragma omp simd
      for (int64_t p = 0; p < count; ++p) {
        const float w = openaff::sigmoid(z[p]).w;
        const float x = m.x[base + p], y = m.y[base + p];
        m.out[base + p] = scale * (y + w * (x - y));
      }
    }
  }
}

// Pass 2: tiles of pixels of one sample, loaded once, computed kChunk pixels at a time.
template <bool SumSource>
void select_tiles(const Maps& m, const Branch& local, const std::vector<float>& logits,
                  float scale) {
  const int64_t width = tile_pixels(m.source_channels), stride = width / kLanes;
  const int64_t tiles = (m.area + width - 1) / width;
#pragma omp parallel
  {
    std::vector<Vec> source(m.source_channels * stride), hidden(local.first.rows * kVecs);
#pragma omp for schedule(static)
    for (int64_t job = 0; job < m.batch * tiles; ++job) {
      const int64_t n = job / tiles, begin = (job % tiles) * width;
      const int64_t count = std::min<int64_t>(width, m.area - begin);
      load_tile<SumSource>(m, n, begin, count, stride, source.data());
      for (int64_t chunk = 0; chunk < count; chunk += kChunk) {
        chunk_select(m, local, logits.data(), scale, n, begin + chunk,
                     std::min<int64_t>(kChunk, count - chunk), source.data() + chunk / kLanes,
                     stride, hidden.data());
      }
    }
  }
}

int leading_inputs(const Options& o) { return o.sum_source ? 2 : 3; }

MXReturnValue forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Options o = options_of(attrs);
  const int lead = leading_inputs(o);
  MXTensor& x = inputs->at(lead - 2);
  MXTensor* params = inputs->data() + lead;
  const Branch local = branch_of(params, o.eps), global = branch_of(params + kBranchInputs, o.eps);
  Maps m{o.sum_source ? nullptr : inputs->at(0).data<float>(), x.data<float>(),
         inputs->at(lead - 1).data<float>(), outputs->at(0).data<float>(),
         x.shape[0], local.first.in, x.shape[1], 1};
  for (size_t axis = 2; axis < x.shape.size(); ++axis) m.area *= x.shape[axis];
  if (o.sum_source) select_tiles<true>(m, local, global_logits<true>(m, global, local), o.scale);
  else select_tiles<false>(m, local, global_logits<false>(m, global, local), o.scale);
  return MX_SUCCESS;
}

// MXNet builds every graph's gradient, so the operator needs one to be part of any graph; the
// fusion blocks only put it in graphs that never record gradients.
MXReturnValue backward(const std::unordered_map<std::string, std::string>&,
                       std::vector<MXTensor>*, std::vector<MXTensor>*, const OpResource&) {
  MX_ERROR_MSG << "openaff_mscam_select is an inference operator (running BatchNorm statistics, "
                  "no gradient): build the graph outside openaff.fusion.graph_mode('inference')";
  return MX_FAIL;
}

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string>& attrs,
                          int* num_in, int* num_out) {
  *num_in = leading_inputs(options_of(attrs)) + 2 * kBranchInputs;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const openaff::Attributes&, std::vector<int>* in_types,
                         std::vector<int>* out_types) {
  return openaff::float32_only("openaff_mscam_select", in_types, out_types);
}

// conv weights (out, in, 1, 1) and per-channel vectors of `out` for one branch
bool branch_shapes(const std::vector<std::vector<unsigned int>>& s, size_t at, unsigned int in,
                   unsigned int out) {
  const auto conv = [&](size_t k, unsigned int o, unsigned int i) {
    const auto& w = s[at + k];
    bool ok = w.size() == 4 && w[0] == o && w[1] == i && w[2] == 1 && w[3] == 1;
    for (size_t v = 1; v < 6; ++v) ok = ok && s[at + k + v] == std::vector<unsigned int>{o};
    return ok;
  };
  if (s[at].size() != 4) return false;
  const unsigned int hidden = s[at][0];
  return conv(0, hidden, in) && conv(6, out, hidden);
}

MXReturnValue infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                          std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const int lead = leading_inputs(options_of(attrs));
  const auto& s = *in_shapes;
  const auto& x = s[lead - 2];
  const auto& source = s[0];
  bool ok = x.size() >= 3 && s[lead - 1] == x && source.size() == x.size() && source[0] == x[0];
  for (size_t axis = 2; ok && axis < x.size(); ++axis) ok = source[axis] == x[axis];
  if (!ok) {
    MX_ERROR_MSG << "openaff_mscam_select: x, y (and the source) must be (N, C, ...) maps of "
                    "one size";
    return MX_FAIL;
  }
  if (!branch_shapes(s, lead, source[1], x[1]) ||
      !branch_shapes(s, lead + kBranchInputs, source[1], x[1])) {
    MX_ERROR_MSG << "openaff_mscam_select: each branch needs conv1x1 (hidden, source "
                    "channels), BN(hidden), conv1x1 (channels, hidden), BN(channels)";
    return MX_FAIL;
  }
  out_shapes->at(0) = x;
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(openaff_mscam_select)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape);
