// What the native fusion operators share around their kernels: attribute parsing and the
// float32-only type check (MXNet's extension library API, include/mxnet/lib_api.h).
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

namespace openaff {

using Attributes = std::unordered_map<std::string, std::string>;

// MXNet passes Python's True as "True" or "1"
inline bool flag(const Attributes& attrs, const char* name) {
  auto found = attrs.find(name);
  return found != attrs.end() &&
         (found->second == "1" || found->second == "True" || found->second == "true");
}

inline float number(const Attributes& attrs, const char* name, float fallback) {
  auto found = attrs.find(name);
  return found == attrs.end() ? fallback : std::stof(found->second);
}

// the kernels compute in float32 only
inline mxnet::ext::MXReturnValue float32_only(const char* op, std::vector<int>* in_types,
                                              std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    if (in_types->at(i) != mxnet::ext::kFloat32) {
      MX_ERROR_MSG << op << " supports float32 only; input " << i << " has type code "
                   << in_types->at(i);
      return mxnet::ext::MX_FAIL;
    }
  }
  for (auto& type : *out_types) type = mxnet::ext::kFloat32;
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace openaff
