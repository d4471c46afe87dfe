// What the fused MS-CAM operators share: 1x1 convolutions computed on tiles of pixels held in
// cache, in register blocks of output channels (GCC vector extensions, no intrinsics).
//
// A tile is `rows` channel rows of up to kTile pixels of one sample, each row `stride` vectors
// long, read from each channel plane as one run: shorter runs from many planes at once left the
// hardware prefetcher behind (40 % of the time in loads). Wide maps get shorter tiles, so that
// a tile stays within kTileFloats (in L2). The products then run on chunks of kChunk pixels,
// kBlock output channels at a time, whose kBlock x kVecs accumulators stay in registers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace openaff {

typedef float Vec __attribute__((vector_size(64)));  // 16 floats; two AVX2 registers elsewhere
constexpr int kLanes = 16;
constexpr int64_t kTile = 256;
constexpr int64_t kTileFloats = 64 * 1024;
constexpr int64_t kChunk = 32;
constexpr int kVecs = kChunk / kLanes;
constexpr int kBlock = 4;

inline int64_t tile_pixels(int64_t widest_rows) {
  return std::clamp<int64_t>(kTileFloats / widest_rows / kChunk * kChunk, kChunk, kTile);
}

inline int64_t round_up(int64_t n, int64_t step = kBlock) { return (n + step - 1) / step * step; }

inline float horizontal_sum(const Vec& v) {
  float total = 0.0f;
  for (int lane = 0; lane < kLanes; ++lane) total += v[lane];
  return total;
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

// A row-major weight matrix whose rows are padded with zeros to a multiple of kBlock, so that
// every block of output channels is full; its columns may be padded too, to read a padded tile.
struct Matrix {
  int64_t rows = 0, cols = 0, padded_rows = 0;
  std::vector<float> data;  // padded_rows x cols
};

// `source` is rows x source_cols (row-major), or its transpose when `transpose` is set
inline Matrix padded_matrix(const float* source, int64_t rows, int64_t source_cols, int64_t cols,
                            bool transpose = false) {
  Matrix m{rows, cols, round_up(rows), {}};
  m.data.assign(m.padded_rows * cols, 0.0f);
  const int64_t used = std::min(source_cols, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < used; ++c)
      m.data[r * cols + c] = transpose ? source[c * rows + r] : source[r * source_cols + c];
  return m;
}

// dst = weight . src (+ bias) on `chunks` chunks of a tile; dst has weight.padded_rows rows.
// The bias is added to the finished sum, as oneDNN adds it: a large bias in the accumulator
// would round every product at its scale.
inline void tile_product(const Matrix& weight, const float* bias, const Vec* src, Vec* dst,
                         int64_t stride, int64_t chunks) {
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t k = 0; k < weight.padded_rows; k += kBlock) {
      Vec acc[kBlock][kVecs] = {};
      block_product(weight.data.data() + k * weight.cols, weight.cols, src + chunk * kVecs,
                    stride, acc);
      for (int j = 0; j < kBlock; ++j) {
        const float b = bias && k + j < weight.rows ? bias[k + j] : 0.0f;
        for (int q = 0; q < kVecs; ++q)
          dst[(k + j) * stride + chunk * kVecs + q] = acc[j][q] + b;
      }
    }
  }
}

// rows of map (N, rows, area) for sample n, pixels [begin, begin + count), into a tile; the
// pixels up to the chunk boundary read zero
inline void load_rows(const float* map, int64_t rows, int64_t area, int64_t n, int64_t begin,
                      int64_t count, Vec* tile, int64_t stride) {
  const int64_t padded = round_up(count, kChunk);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = reinterpret_cast<float*>(tile + r * stride);
    const float* from = map + (n * rows + r) * area + begin;
#pragma omp simd
    for (int64_t p = 0; p < count; ++p) row[p] = from[p];
    for (int64_t p = count; p < padded; ++p) row[p] = 0.0f;
  }
}

inline void store_rows(const Vec* tile, int64_t stride, int64_t rows, int64_t area, int64_t n,
                       int64_t begin, int64_t count, float* map) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = reinterpret_cast<const float*>(tile + r * stride);
    float* to = map + (n * rows + r) * area + begin;
#pragma omp simd
    for (int64_t p = 0; p < count; ++p) to[p] = row[p];
  }
}

}  // namespace openaff
