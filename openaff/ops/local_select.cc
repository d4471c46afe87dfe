// MS-CAM's local context branch and the soft selection of Attentional Feature Fusion (Dai et
// al., WACV 2021, Sec. 3.2-3.3) for training graphs, forward and backward:
//
//   out = scale * (y + sigmoid(L(s) + g) * (x - y)),
//   L(s) = BN2(conv2(ReLU(BN1(conv1(s)))))    per pixel, 1x1 convolutions,
//
// with both BatchNorms on batch statistics (over N and the pixels), whose running statistics
// are updated as Gluon's BatchNorm updates them (momentum, biased variance). g is the global
// branch's logit per sample and channel, computed by MXNet's own operators: the BatchNorms over
// pooled maps of a small batch are ill-conditioned, and the original's rounding is kept there.
// At CIFAR widths (16 -> 4 -> 16 channels) each of the branch's ten MXNet operators, forward
// and backward, and the layout conversions between them made a pass over a map for a few
// multiply-adds; here the forward makes three passes over tiles held in cache and one over the
// planes, the backward one over the planes and two over tiles.
//
// Inputs: source s (N, Cs, ...), x and y (N, C, ...), g (N, C, 1, ...), then conv1 weight and
// bias, BN1 gamma, beta, running mean, running var, conv2 weight and bias, BN2 gamma, beta,
// running mean, running var (the running statistics are updated in place).
// Outputs: the selection, then what the backward reads: conv1's output h (N, Ci, ...), conv2's
// output l (N, C, ...) and the batch moments (mean1, 1/std1, mean2, 1/std2).
// Attributes: scale (2 for AFF, 1 for iAFF), eps, momentum (of the running statistics).
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attributes.h"
#include "mxnet/lib_api.h"
#include "pointwise.h"
#include "sigmoid.h"

using namespace mxnet::ext;
using openaff::Matrix;
using openaff::Vec;

namespace {

constexpr int kLead = 4;  // s, x, y, g
enum Param { kW1, kB1, kGamma1, kBeta1, kMean1, kVar1, kW2, kB2, kGamma2, kBeta2, kMean2, kVar2,
             kParams };
enum Output { kOut, kHidden, kLocal, kMoments, kOutputs };

struct Options {
  float scale, eps, momentum;
};

Options options_of(const openaff::Attributes& attrs) {
  return {openaff::number(attrs, "scale", 1.0f), openaff::number(attrs, "eps", 1e-5f),
          openaff::number(attrs, "momentum", 0.9f)};
}

struct Dims {
  int64_t batch, in, hidden, channels, area;
  int64_t samples() const { return batch * area; }  // what each BatchNorm averages over
  int64_t widest() const { return std::max(in, channels); }
};

Dims dims_of(const std::vector<MXTensor>& inputs, int first) {
  const MXTensor& s = inputs[first];
  Dims d{s.shape[0], s.shape[1], inputs[first + kLead + kW1].shape[0],
         inputs[first + 1].shape[1], 1};
  for (size_t axis = 2; axis < s.shape.size(); ++axis) d.area *= s.shape[axis];
  return d;
}

inline float* row_of(Vec* tile, int64_t r, int64_t stride) {
  return reinterpret_cast<float*>(tile + r * stride);
}

// Tiles of pixels of one sample, split statically over the threads (so that the per-thread
// sums, added in thread order, are the same from run to run). `visit(state, n, begin, count)`
// works on a thread's copy of `prototype`; the copies are returned.
template <typename State, typename Visit>
std::vector<State> run_tiles(const Dims& d, const State& prototype, Visit&& visit) {
  const int64_t width = openaff::tile_pixels(d.widest());
  const int64_t tiles = (d.area + width - 1) / width;
  std::vector<State> states;
#pragma omp parallel
  {
#pragma omp single
    states.assign(omp_get_num_threads(), prototype);
    State& state = states[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t job = 0; job < d.batch * tiles; ++job) {
      const int64_t n = job / tiles, begin = (job % tiles) * width;
      visit(state, n, begin, std::min<int64_t>(width, d.area - begin));
    }
  }
  return states;
}

// Per channel of a map (N, rows, area): its BatchNorm's batch mean and 1/std (biased variance,
// two passes in double), with the running statistics updated; the BatchNorm's output is
// scale * (v - mean) + beta. Centred before scaling, as mxnet computes it: folding the mean
// into the shift would cancel two large terms where the mean is large next to the spread (a
// conv bias that has drifted), and such errors grow twenty-fold and more through the
// ill-conditioned BatchNorms over pooled maps of the global branch.
struct Norm {
  std::vector<float> mean, inv, scale;
};

Norm batch_norm(const float* map, int64_t rows, const Dims& d, const Options& o,
                const float* gamma, const float* beta, float* running_mean, float* running_var) {
  const int64_t planes = d.batch * rows;
  std::vector<double> plane_sum(planes), mean(rows, 0.0), var(rows, 0.0);
  for (int pass = 0; pass < 2; ++pass) {
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const float* v = map + plane * d.area;
      const double center = pass ? mean[plane % rows] : 0.0;
      double total = 0.0;
#pragma omp simd reduction(+ : total)
      for (int64_t p = 0; p < d.area; ++p) {
        const double e = v[p] - center;
        total += pass ? e * e : e;
      }
      plane_sum[plane] = total;
    }
    std::vector<double>& result = pass ? var : mean;
    for (int64_t plane = 0; plane < planes; ++plane) result[plane % rows] += plane_sum[plane];
    for (auto& value : result) value /= static_cast<double>(d.samples());
  }
  Norm norm{std::vector<float>(rows), std::vector<float>(rows), std::vector<float>(rows)};
  for (int64_t c = 0; c < rows; ++c) {
    norm.mean[c] = static_cast<float>(mean[c]);
    norm.inv[c] = static_cast<float>(1.0 / std::sqrt(var[c] + o.eps));
    norm.scale[c] = gamma[c] * norm.inv[c];
    running_mean[c] = running_mean[c] * o.momentum + norm.mean[c] * (1.0f - o.momentum);
    running_var[c] = running_var[c] * o.momentum +
                     static_cast<float>(var[c]) * (1.0f - o.momentum);
  }
  return norm;
}

// tile buffers of one thread: rows x stride vectors each, zero at first (padded rows stay zero)
struct Buffers {
  int64_t stride;
  std::vector<Vec> a, b, c;
  Buffers(const Dims& d, int64_t rows_a, int64_t rows_b, int64_t rows_c)
      : stride(openaff::tile_pixels(d.widest()) / openaff::kLanes),
        a(rows_a * stride), b(rows_b * stride), c(rows_c * stride) {}
};

int64_t chunks_of(int64_t count) { return (count + openaff::kChunk - 1) / openaff::kChunk; }

// ---- forward -------------------------------------------------------------------------------

struct Forward {
  const Dims& d;
  const Options& o;
  const float *s, *x, *y, *g;
  float* p[kParams];
  float *out, *hidden, *local;
  Matrix w1, w2;

  Forward(const Dims& dims, const Options& opts, std::vector<MXTensor>* inputs,
          std::vector<MXTensor>* outputs)
      : d(dims), o(opts), s(inputs->at(0).data<float>()), x(inputs->at(1).data<float>()),
        y(inputs->at(2).data<float>()), g(inputs->at(3).data<float>()),
        out(outputs->at(kOut).data<float>()), hidden(outputs->at(kHidden).data<float>()),
        local(outputs->at(kLocal).data<float>()) {
    for (int k = 0; k < kParams; ++k) p[k] = inputs->at(kLead + k).data<float>();
    w1 = openaff::padded_matrix(p[kW1], d.hidden, d.in, d.in);
    w2 = openaff::padded_matrix(p[kW2], d.channels, d.hidden, w1.padded_rows);
  }

  // conv1: h = W1 s + b1
  void first_conv() {
    Buffers prototype(d, d.in, w1.padded_rows, 0);
    run_tiles(d, prototype, [&](Buffers& t, int64_t n, int64_t begin, int64_t count) {
      openaff::load_rows(s, d.in, d.area, n, begin, count, t.a.data(), t.stride);
      openaff::tile_product(w1, p[kB1], t.a.data(), t.b.data(), t.stride, chunks_of(count));
      openaff::store_rows(t.b.data(), t.stride, d.hidden, d.area, n, begin, count, hidden);
    });
  }

  // conv2 on ReLU(BN1(h)): l = W2 a + b2
  void second_conv(const Norm& first) {
    Buffers prototype(d, w1.padded_rows, w2.padded_rows, 0);
    run_tiles(d, prototype, [&](Buffers& t, int64_t n, int64_t begin, int64_t count) {
      openaff::load_rows(hidden, d.hidden, d.area, n, begin, count, t.a.data(), t.stride);
      const int64_t pixels = chunks_of(count) * openaff::kChunk;
      for (int64_t r = 0; r < d.hidden; ++r) {
        float* row = row_of(t.a.data(), r, t.stride);
        const float k = first.scale[r], m = first.mean[r], beta = p[kBeta1][r];
#pragma omp simd
        for (int64_t q = 0; q < pixels; ++q) row[q] = std::max(k * (row[q] - m) + beta, 0.0f);
      }
      openaff::tile_product(w2, p[kB2], t.a.data(), t.b.data(), t.stride, chunks_of(count));
      openaff::store_rows(t.b.data(), t.stride, d.channels, d.area, n, begin, count, local);
    });
  }

  void select(const Norm& second) {
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < d.batch * d.channels; ++plane) {
      const int64_t c = plane % d.channels, begin = plane * d.area;
      const float k = second.scale[c], m = second.mean[c], beta = p[kBeta2][c], bias = g[plane];
#pragma omp simd
      for (int64_t i = begin; i < begin + d.area; ++i) {
        const float w = openaff::sigmoid((k * (local[i] - m) + beta) + bias).w;
        out[i] = o.scale * (y[i] + w * (x[i] - y[i]));
      }
    }
  }
};

MXReturnValue forward(const std::unordered_map<std::string, std::string>& attrs,
                      std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Options o = options_of(attrs);
  const Dims d = dims_of(*inputs, 0);
  Forward f(d, o, inputs, outputs);
  float* const* p = f.p;
  f.first_conv();
  const Norm first = batch_norm(f.hidden, d.hidden, d, o, p[kGamma1], p[kBeta1], p[kMean1],
                                p[kVar1]);
  f.second_conv(first);
  const Norm second = batch_norm(f.local, d.channels, d, o, p[kGamma2], p[kBeta2], p[kMean2],
                                 p[kVar2]);
  f.select(second);
  float* moments = outputs->at(kMoments).data<float>();
  for (const auto* part : {&first.mean, &first.inv, &second.mean, &second.inv}) {
    moments = std::copy(part->begin(), part->end(), moments);
  }
  return MX_SUCCESS;
}

// ---- backward ------------------------------------------------------------------------------

// A thread's tile buffers and its sums of one backward pass over tiles, in double: a weight
// gradient (rows x cols), a bias gradient (rows) and, for the BatchNorm before, the sums of
// its output gradient times the centred input and of the gradient itself (hidden rows).
struct Sums {
  Buffers t;
  std::vector<double> weight, bias, centered, total;
  Sums(const Buffers& buffers, int64_t rows, int64_t cols, int64_t norm_rows)
      : t(buffers), weight(rows * cols, 0.0), bias(rows, 0.0), centered(norm_rows, 0.0),
        total(norm_rows, 0.0) {}
};

std::vector<double> add_up(const std::vector<Sums>& states, std::vector<double> Sums::*member) {
  std::vector<double> total((states.front().*member).size(), 0.0);
  for (const Sums& state : states)
    for (size_t k = 0; k < total.size(); ++k) total[k] += (state.*member)[k];
  return total;
}

// weight[i * b_rows + j] += the sum over a tile's pixels of a[i] * b[j]; row sums of a into
// bias (padded pixels are zero in a)
void add_products(const Vec* a, int64_t a_rows, const Vec* b, int64_t b_rows, int64_t stride,
                  int64_t vecs, double* weight, double* bias) {
  for (int64_t i = 0; i < a_rows; ++i) {
    Vec row{};
    for (int64_t q = 0; q < vecs; ++q) row += a[i * stride + q];
    bias[i] += openaff::horizontal_sum(row);
    for (int64_t j = 0; j < b_rows; ++j) {
      Vec acc{};
      for (int64_t q = 0; q < vecs; ++q) acc += a[i * stride + q] * b[j * stride + q];
      weight[i * b_rows + j] += openaff::horizontal_sum(acc);
    }
  }
}

// A BatchNorm's input gradient from its output gradient dy, as the affine map
// scale * dy + slope * (v - mean) + offset per channel:
//   dv = gamma/std * (dy - mean(dy) - (v - mean)/std * mean(dy * (v - mean)/std))
struct NormGrad {
  std::vector<float> scale, slope, offset;
};

NormGrad norm_grad(const float* gamma, const float* inv, const std::vector<double>& d_gamma,
                   const std::vector<double>& d_beta, double samples) {
  NormGrad n;
  for (size_t c = 0; c < d_beta.size(); ++c) {
    const double k = static_cast<double>(gamma[c]) * inv[c];
    n.scale.push_back(static_cast<float>(k));
    n.slope.push_back(static_cast<float>(-k * inv[c] * d_gamma[c] / samples));
    n.offset.push_back(static_cast<float>(-k * d_beta[c] / samples));
  }
  return n;
}

// rows of a tile loaded from `grad_map` turned into the BatchNorm's input gradient, reading the
// BatchNorm's input from `input_map`; the padded pixels stay zero
void norm_backward_rows(const NormGrad& n, const float* mean, const float* input_map,
                        int64_t rows, int64_t area, int64_t sample, int64_t begin, int64_t count,
                        Vec* tile, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = row_of(tile, r, stride);
    const float* v = input_map + (sample * rows + r) * area + begin;
    const float k = n.scale[r], a = n.slope[r], b = n.offset[r], m = mean[r];
#pragma omp simd
    for (int64_t q = 0; q < count; ++q) row[q] = k * row[q] + a * (v[q] - m) + b;
  }
}

struct Backward {
  const Dims& d;
  const Options& o;
  const float *d_out, *s, *x, *y, *g, *hidden, *local;
  float* p[kParams];
  const float *mean1, *inv1, *mean2, *inv2;
  std::vector<MXTensor>* grads;
  float *d_local, *d_relu;  // workspace: dL/dz (N, C, ...), dL/d(BN1 output) (N, Ci, ...)

  // inputs: the four output gradients, the sixteen inputs, the four outputs
  Backward(const Dims& dims, const Options& opts, std::vector<MXTensor>* inputs,
           std::vector<MXTensor>* outputs, const OpResource& res)
      : d(dims), o(opts), d_out(inputs->at(0).data<float>()),
        s(inputs->at(kOutputs).data<float>()), x(inputs->at(kOutputs + 1).data<float>()),
        y(inputs->at(kOutputs + 2).data<float>()), g(inputs->at(kOutputs + 3).data<float>()),
        hidden(output(inputs, kHidden)), local(output(inputs, kLocal)), grads(outputs) {
    for (int k = 0; k < kParams; ++k) p[k] = inputs->at(kOutputs + kLead + k).data<float>();
    mean1 = output(inputs, kMoments);
    inv1 = mean1 + d.hidden;
    mean2 = inv1 + d.hidden;
    inv2 = mean2 + d.channels;
    // one request: mxnet hands every request of an operator call the same temporary space
    const int64_t local_size = d.batch * d.channels * d.area;
    d_local = static_cast<float*>(
        res.alloc_cpu((local_size + d.batch * d.hidden * d.area) * sizeof(float)));
    d_relu = d_local + local_size;
  }

  static const float* output(std::vector<MXTensor>* inputs, int which) {
    return inputs->at(kOutputs + kLead + kParams + which).data<float>();
  }

  float* grad(int input) { return grads->at(input).data<float>(); }

  // the selection's gradients to x, y and g, and dz (z = BN2(l) + g) into the workspace;
  // returns BN2's gamma and beta gradients: sum dz * (l - mean2) / std2 and sum dz
  std::pair<std::vector<double>, std::vector<double>> selection() {
    const int64_t planes = d.batch * d.channels;
    std::vector<double> centered(planes);
    float *d_x = grad(1), *d_y = grad(2), *d_g = grad(3);
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t c = plane % d.channels, begin = plane * d.area;
      const float k = p[kGamma2][c] * inv2[c], m = mean2[c], beta = p[kBeta2][c], bias = g[plane];
      double total = 0.0, weighted = 0.0;
#pragma omp simd reduction(+ : total, weighted)
      for (int64_t i = begin; i < begin + d.area; ++i) {
        const openaff::Sigmoid w = openaff::sigmoid((k * (local[i] - m) + beta) + bias);
        const float grad_out = o.scale * d_out[i];
        d_x[i] = grad_out * w.w;
        d_y[i] = grad_out - grad_out * w.w;
        const float dz = grad_out * (x[i] - y[i]) * w.slope;
        d_local[i] = dz;
        total += dz;
        weighted += static_cast<double>(dz) * (local[i] - m);
      }
      d_g[plane] = static_cast<float>(total);
      centered[plane] = weighted;
    }
    std::vector<double> d_gamma(d.channels, 0.0), d_beta(d.channels, 0.0);
    for (int64_t plane = 0; plane < planes; ++plane) {  // in order: the same sums every run
      d_beta[plane % d.channels] += d_g[plane];
      d_gamma[plane % d.channels] += centered[plane];
    }
    for (int64_t c = 0; c < d.channels; ++c) d_gamma[c] *= inv2[c];
    return {d_gamma, d_beta};
  }

  // BN2 and conv2 backward: dl from dz; W2's and b2's gradients (dl times the ReLU output);
  // d(BN1 output) = W2^T dl where the ReLU passed, and its sums for BN1's backward
  std::vector<Sums> second_conv(const NormGrad& bn2) {
    const Matrix w2t = openaff::padded_matrix(p[kW2], d.hidden, d.channels, d.channels, true);
    const Sums prototype(Buffers(d, d.channels, w2t.padded_rows, w2t.padded_rows), d.channels,
                         d.hidden, d.hidden);
    std::vector<float> scale1(d.hidden);
    for (int64_t r = 0; r < d.hidden; ++r) scale1[r] = p[kGamma1][r] * inv1[r];
    return run_tiles(d, prototype, [&](Sums& sums, int64_t n, int64_t begin, int64_t count) {
      Buffers& t = sums.t;  // a: dz, then dl; b: h, then the ReLU output; c: d(BN1 output)
      const int64_t chunks = chunks_of(count), vecs = chunks * openaff::kVecs;
      openaff::load_rows(d_local, d.channels, d.area, n, begin, count, t.a.data(), t.stride);
      norm_backward_rows(bn2, mean2, local, d.channels, d.area, n, begin, count, t.a.data(),
                         t.stride);
      openaff::load_rows(hidden, d.hidden, d.area, n, begin, count, t.b.data(), t.stride);
      openaff::tile_product(w2t, nullptr, t.a.data(), t.c.data(), t.stride, chunks);
      for (int64_t r = 0; r < d.hidden; ++r) {
        float *h = row_of(t.b.data(), r, t.stride), *dr = row_of(t.c.data(), r, t.stride);
        const float k = scale1[r], m = mean1[r], beta = p[kBeta1][r];
        double total = 0.0, centered = 0.0;
#pragma omp simd reduction(+ : total, centered)
        for (int64_t q = 0; q < chunks * openaff::kChunk; ++q) {
          const float u = k * (h[q] - m) + beta;
          const float du = u > 0.0f ? dr[q] : 0.0f;  // zero at padded pixels: dl is zero there
          total += du;
          centered += static_cast<double>(du) * (h[q] - m);
          dr[q] = du;
          h[q] = u > 0.0f ? u : 0.0f;
        }
        sums.total[r] += total;
        sums.centered[r] += centered;
      }
      add_products(t.a.data(), d.channels, t.b.data(), d.hidden, t.stride, vecs,
                   sums.weight.data(), sums.bias.data());
      openaff::store_rows(t.c.data(), t.stride, d.hidden, d.area, n, begin, count, d_relu);
    });
  }

  // BN1 and conv1 backward: dh from d(BN1 output); W1's and b1's gradients (dh times s) and
  // the source's gradient W1^T dh
  std::vector<Sums> first_conv(const NormGrad& bn1) {
    const int64_t hidden_rows = openaff::round_up(d.hidden);
    const Matrix w1t = openaff::padded_matrix(p[kW1], d.in, d.hidden, hidden_rows, true);
    const Sums prototype(Buffers(d, hidden_rows, d.in, w1t.padded_rows), d.hidden, d.in, 0);
    float* d_source = grad(0);
    return run_tiles(d, prototype, [&](Sums& sums, int64_t n, int64_t begin, int64_t count) {
      Buffers& t = sums.t;  // a: dh; b: s; c: the source's gradient
      const int64_t chunks = chunks_of(count);
      openaff::load_rows(d_relu, d.hidden, d.area, n, begin, count, t.a.data(), t.stride);
      norm_backward_rows(bn1, mean1, hidden, d.hidden, d.area, n, begin, count, t.a.data(),
                         t.stride);
      openaff::load_rows(s, d.in, d.area, n, begin, count, t.b.data(), t.stride);
      openaff::tile_product(w1t, nullptr, t.a.data(), t.c.data(), t.stride, chunks);
      add_products(t.a.data(), d.hidden, t.b.data(), d.in, t.stride, chunks * openaff::kVecs,
                   sums.weight.data(), sums.bias.data());
      openaff::store_rows(t.c.data(), t.stride, d.in, d.area, n, begin, count, d_source);
    });
  }

  void write(int input, const std::vector<double>& values) {
    float* to = grad(kLead + input);
    for (size_t k = 0; k < values.size(); ++k) to[k] = static_cast<float>(values[k]);
  }

  void clear(int input) {
    float* to = grad(kLead + input);
    std::fill(to, to + grads->at(kLead + input).size(), 0.0f);
  }
};

MXReturnValue backward(const std::unordered_map<std::string, std::string>& attrs,
                       std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource& res) {
  const Options o = options_of(attrs);
  const Dims d = dims_of(*inputs, kOutputs);
  Backward b(d, o, inputs, outputs, res);
  const double samples = static_cast<double>(d.samples());
  const auto [d_gamma2, d_beta2] = b.selection();
  const std::vector<Sums> second = b.second_conv(
      norm_grad(b.p[kGamma2], b.inv2, d_gamma2, d_beta2, samples));
  std::vector<double> d_gamma1 = add_up(second, &Sums::centered);
  for (int64_t r = 0; r < d.hidden; ++r) d_gamma1[r] *= b.inv1[r];
  const std::vector<double> d_beta1 = add_up(second, &Sums::total);
  const std::vector<Sums> first = b.first_conv(
      norm_grad(b.p[kGamma1], b.inv1, d_gamma1, d_beta1, samples));
  b.write(kW1, add_up(first, &Sums::weight));
  b.write(kB1, add_up(first, &Sums::bias));
  b.write(kGamma1, d_gamma1);
  b.write(kBeta1, d_beta1);
  b.write(kW2, add_up(second, &Sums::weight));
  b.write(kB2, add_up(second, &Sums::bias));
  b.write(kGamma2, d_gamma2);
  b.write(kBeta2, d_beta2);
  for (int running : {kMean1, kVar1, kMean2, kVar2}) b.clear(running);
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string>&, int* num_in,
                          int* num_out) {
  *num_in = kLead + kParams;
  *num_out = kOutputs;
  return MX_SUCCESS;
}

MXReturnValue mutate_inputs(const std::unordered_map<std::string, std::string>&,
                            std::vector<int>* indices) {
  for (int running : {kMean1, kVar1, kMean2, kVar2}) indices->push_back(kLead + running);
  return MX_SUCCESS;
}

MXReturnValue infer_type(const openaff::Attributes&, std::vector<int>* in_types,
                         std::vector<int>* out_types) {
  return openaff::float32_only("openaff_local_select", in_types, out_types);
}

using Shapes = std::vector<std::vector<unsigned int>>;

// conv weight (out, in, 1, 1) and five vectors of `out` from `at`
bool conv_norm(const Shapes& s, size_t at, unsigned int out, unsigned int in) {
  const auto& w = s[at];
  bool ok = w.size() == 4 && w[0] == out && w[1] == in && w[2] == 1 && w[3] == 1;
  for (size_t v = 1; v < 6; ++v) ok = ok && s[at + v] == std::vector<unsigned int>{out};
  return ok;
}

MXReturnValue infer_shape(const std::unordered_map<std::string, std::string>&,
                          Shapes* in_shapes, Shapes* out_shapes) {
  const Shapes& s = *in_shapes;
  const auto &source = s[0], &x = s[1], &g = s[3];
  bool ok = x.size() >= 3 && s[2] == x && source.size() == x.size() && source[0] == x[0] &&
            g.size() == x.size() && g[0] == x[0] && g[1] == x[1];
  for (size_t axis = 2; ok && axis < x.size(); ++axis) ok = source[axis] == x[axis] && g[axis] == 1;
  if (!ok) {
    MX_ERROR_MSG << "openaff_local_select: s, x, y must be (N, C, ...) maps of one size and "
                    "g (N, C, 1, ...)";
    return MX_FAIL;
  }
  const unsigned int hidden = s[kLead + kW1].empty() ? 0 : s[kLead + kW1][0];
  if (!conv_norm(s, kLead + kW1, hidden, source[1]) || !conv_norm(s, kLead + kW2, x[1], hidden)) {
    MX_ERROR_MSG << "openaff_local_select: the branch needs conv1x1 (hidden, source channels), "
                    "BN(hidden), conv1x1 (channels, hidden), BN(channels)";
    return MX_FAIL;
  }
  out_shapes->at(kOut) = x;
  out_shapes->at(kHidden) = x;
  out_shapes->at(kHidden)[1] = hidden;
  out_shapes->at(kLocal) = x;
  out_shapes->at(kMoments) = {2 * hidden + 2 * x[1]};
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(openaff_local_select)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_attrs)
    .setMutateInputs(mutate_inputs)
    .setInferType(infer_type)
    .setInferShape(infer_shape);
