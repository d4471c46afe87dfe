// The sigmoid shared by the native fusion operators: vectorisable, exact at both ends.
#pragma once

#include <cmath>

namespace openaff {

// exp(-a) for a >= 0, as a polynomial that GCC vectorises (libm's expf is a scalar call
// unless -ffast-math, whose finite-math assumption turned sigmoid(z < -88.7) into NaN).
// Cephes' expf reduction and coefficients, about 1 ulp. a is clamped at 87 so that 2^n stays a
// normal float: sigmoid(-z) then reads 1.6e-38 instead of a smaller denormal for z > 87,
// below float32 resolution next to any other term of the selection.
inline float exp_negative(float a) {
  const float x = -(a > 87.0f ? 87.0f : a);  // +inf to -87; NaN stays NaN
  const int n = static_cast<int>(x * 1.44269504088896341f - 0.5f);  // round(x / ln 2), x <= 0
  const float r = (x - static_cast<float>(n) * 0.693359375f) +
                  static_cast<float>(n) * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  return e * __builtin_bit_cast(float, (n + 127) << 23);
}

// sigmoid(z) and sigmoid'(z) = w * (1 - w), from e = exp(-|z|) <= 1: never overflows, exact
// at both ends (w = 0 or 1, derivative 0) for |z| up to infinity.
struct Sigmoid {
  float w;
  float slope;
};

inline Sigmoid sigmoid(float z) {
  const float e = exp_negative(std::fabs(z));
  const float inv = 1.0f / (1.0f + e);
  return {z < 0.0f ? e * inv : inv, e * inv * inv};
}

}  // namespace openaff
