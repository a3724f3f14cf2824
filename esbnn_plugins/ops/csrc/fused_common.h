// What the fused ES epilogue kernels (replicated_affine_act.cpp, replicated_norm_act.cpp) share.
#pragma once
#include <ATen/core/Tensor.h>

// float32, the training dtype, is compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC function multiversioning); float64 (gradcheck) once.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ESBNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ESBNN_CLONES
#endif

namespace esbnn {

// The data of an optional tensor, or nullptr when it is absent.
template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

}  // namespace esbnn
