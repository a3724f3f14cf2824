// The epilogue of an ES binary linear on tokens in one pass per token, forward and backward (METHOD.md
// section 4, issue 10): BinaryViT's unit after an ES linear, LayerNorm -> + shortcut -> (R)PReLU, at the
// widened width, without materialising the replicate.
//
// For token m and widened feature c = r * K + k (Tensor.repeat's layout, R replicas of K unique outputs):
//   pre[c]  = u[m, k] + bias[c]
//   n[c]    = (pre[c] - mean(pre)) * rstd            (LayerNorm over the C widened features)
//   a[c]    = n[c] * weight[c] + shift[c] + s[m, c]  (shift: the norm's bias plus RPReLU's first shift)
//   out[c]  = prelu(a[c], slope[c]) + out_shift[c]
// The shortcut s[m, c] reads src (M, S) as BinaryViT's parameter-free shortcuts do: src[m, c] (S == C),
// src[m, c % S] (repeat, C a multiple of S) or the mean of src[m, c*G .. c*G+G-1] (S == C * G).
// Each task owns a block of tokens; a token's row lives in a small buffer, so the widened tensor is read
// and written once. bias, weight, slope and out_shift are optional. Per-feature gradient sums are kept
// per thread and added at the end. The Python wrapper (esbnn_plugins/ops/fused.py) checks dtypes and shapes.
// ATen's tensor, the ops used and the pybind11 casters, not <torch/extension.h>: the whole C++ frontend
// would double the compile time of the first use.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include "fused_common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using esbnn::data_or_null;

template <typename T>
struct Args {
  const T *u, *bias, *weight, *shift, *src, *slope, *out_shift, *grad;
  T *out, *mean, *rstd, *grad_u, *grad_src, *sums;  // sums: per thread, 5 rows of C (bias, weight, shift, slope, out_shift)
  int64_t M, K, C, S;
  double eps;
};

// s[c] for one token from its shortcut source row.
template <typename T>
inline void shortcut_row(const Args<T>& a, const T* __restrict__ src, T* __restrict__ s) {
  if (a.S == a.C) {
    for (int64_t c = 0; c < a.C; ++c) s[c] = src[c];
  } else if (a.C % a.S == 0) {
    for (int64_t base = 0; base < a.C; base += a.S)
      for (int64_t j = 0; j < a.S; ++j) s[base + j] = src[j];
  } else {
    const int64_t G = a.S / a.C;
    const T inv = T(1) / T(G);
    for (int64_t c = 0; c < a.C; ++c) {
      T total = 0;
      for (int64_t i = 0; i < G; ++i) total += src[c * G + i];
      s[c] = total * inv;
    }
  }
}

// pre[c] = u[k] + bias[c] for one token.
template <typename T>
inline void pre_row(const Args<T>& a, const T* __restrict__ u, T* __restrict__ pre) {
  for (int64_t base = 0; base < a.C; base += a.K) {
    if (a.bias) {
      const T* __restrict__ b = a.bias + base;
#pragma omp simd
      for (int64_t k = 0; k < a.K; ++k) pre[base + k] = u[k] + b[k];
    } else {
      for (int64_t k = 0; k < a.K; ++k) pre[base + k] = u[k];
    }
  }
}

// The row's mean and 1 / sqrt(biased variance + eps), as LayerNorm computes them (two passes).
template <typename T>
inline void row_stats(const Args<T>& a, const T* __restrict__ pre, T& mean, T& rstd) {
  T total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t c = 0; c < a.C; ++c) total += pre[c];
  mean = total / T(a.C);
  T squares = 0;
#pragma omp simd reduction(+ : squares)
  for (int64_t c = 0; c < a.C; ++c) squares += (pre[c] - mean) * (pre[c] - mean);
  rstd = T(1) / std::sqrt(squares / T(a.C) + T(a.eps));
}

// The optional weight and slope are template parameters so that the inner loops are straight, vectorisable passes.
template <typename T, bool WEIGHT, bool SLOPE>
inline __attribute__((always_inline)) void forward_rows(const Args<T>& a, int64_t begin, int64_t end) {
  std::vector<T> buffer(2 * a.C);
  T* __restrict__ pre = buffer.data();
  T* __restrict__ s = pre + a.C;
  // restrict-qualified copies: without them the loops are versioned for aliasing and may run scalar
  const T* __restrict__ weight = a.weight;
  const T* __restrict__ shift = a.shift;
  const T* __restrict__ slope = a.slope;
  const T* __restrict__ out_shift = a.out_shift;
  for (int64_t m = begin; m < end; ++m) {
    T mean, rstd;
    pre_row(a, a.u + m * a.K, pre);
    row_stats(a, pre, mean, rstd);
    shortcut_row(a, a.src + m * a.S, s);
    T* __restrict__ out = a.out + m * a.C;
#pragma omp simd
    for (int64_t c = 0; c < a.C; ++c) {
      const T n = (pre[c] - mean) * rstd;
      T x = (WEIGHT ? n * weight[c] : n) + shift[c] + s[c];
      if (SLOPE) x = std::max(x, T(0)) + slope[c] * std::min(x, T(0));
      out[c] = out_shift ? x + out_shift[c] : x;
    }
    a.mean[m] = mean;
    a.rstd[m] = rstd;
  }
}

template <typename T, bool WEIGHT, bool SLOPE>
inline __attribute__((always_inline)) void backward_rows(const Args<T>& a, int64_t begin, int64_t end, T* sums) {
  std::vector<T> buffer(3 * a.C);
  T* __restrict__ pre = buffer.data();  // holds n, then the gradient of pre
  T* __restrict__ s = pre + a.C;        // holds the shortcut, then the gradient of a
  T* __restrict__ gn = s + a.C;
  T* __restrict__ g_bias = sums;
  T* __restrict__ g_weight = sums + a.C;
  T* __restrict__ g_shift = sums + 2 * a.C;
  T* __restrict__ g_slope = sums + 3 * a.C;
  T* __restrict__ g_out_shift = sums + 4 * a.C;
  const T* __restrict__ weight = a.weight;  // restrict-qualified copies, as in forward_rows
  const T* __restrict__ shift = a.shift;
  const T* __restrict__ slope = a.slope;
  for (int64_t m = begin; m < end; ++m) {
    const T mean = a.mean[m], rstd = a.rstd[m];
    pre_row(a, a.u + m * a.K, pre);
    shortcut_row(a, a.src + m * a.S, s);
    const T* __restrict__ g = a.grad + m * a.C;
    T sum_gn = 0, sum_gn_n = 0;
#pragma omp simd reduction(+ : sum_gn, sum_gn_n)
    for (int64_t c = 0; c < a.C; ++c) {
      const T n = (pre[c] - mean) * rstd;
      const T w = WEIGHT ? weight[c] : T(1);
      const T x = n * w + shift[c] + s[c];
      T d = g[c];
      if (SLOPE) {  // arithmetic, not branches, so that the loop vectorises
        const T below = T(x <= T(0));
        g_slope[c] += d * below * x;
        d *= T(1) + below * (slope[c] - T(1));
      }
      g_out_shift[c] += g[c];
      g_shift[c] += d;
      g_weight[c] += d * n;
      s[c] = d;
      pre[c] = n;
      gn[c] = d * w;
      sum_gn += gn[c];
      sum_gn_n += gn[c] * n;
    }
    const T mean_gn = sum_gn / T(a.C), mean_gn_n = sum_gn_n / T(a.C);
#pragma omp simd
    for (int64_t c = 0; c < a.C; ++c) {
      pre[c] = rstd * (gn[c] - mean_gn - pre[c] * mean_gn_n);
      g_bias[c] += pre[c];
    }
    T* __restrict__ gu = a.grad_u + m * a.K;
    for (int64_t k = 0; k < a.K; ++k) gu[k] = pre[k];
    for (int64_t base = a.K; base < a.C; base += a.K)
#pragma omp simd
      for (int64_t k = 0; k < a.K; ++k) gu[k] += pre[base + k];
    T* __restrict__ gsrc = a.grad_src + m * a.S;
    if (a.S == a.C) {
      for (int64_t c = 0; c < a.C; ++c) gsrc[c] = s[c];
    } else if (a.C % a.S == 0) {
      for (int64_t j = 0; j < a.S; ++j) gsrc[j] = s[j];
      for (int64_t base = a.S; base < a.C; base += a.S)
        for (int64_t j = 0; j < a.S; ++j) gsrc[j] += s[base + j];
    } else {
      const int64_t G = a.S / a.C;
      const T inv = T(1) / T(G);
      for (int64_t c = 0; c < a.C; ++c)
        for (int64_t i = 0; i < G; ++i) gsrc[c * G + i] = s[c] * inv;
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void forward_range(const Args<T>& a, int64_t begin, int64_t end) {
  if (a.weight && a.slope) forward_rows<T, true, true>(a, begin, end);
  else if (a.weight) forward_rows<T, true, false>(a, begin, end);
  else if (a.slope) forward_rows<T, false, true>(a, begin, end);
  else forward_rows<T, false, false>(a, begin, end);
}

template <typename T>
inline __attribute__((always_inline)) void backward_range(const Args<T>& a, int64_t begin, int64_t end, T* sums) {
  if (a.weight && a.slope) backward_rows<T, true, true>(a, begin, end, sums);
  else if (a.weight) backward_rows<T, true, false>(a, begin, end, sums);
  else if (a.slope) backward_rows<T, false, true>(a, begin, end, sums);
  else backward_rows<T, false, false>(a, begin, end, sums);
}

ESBNN_CLONES void forward_f32(const Args<float>& a, int64_t begin, int64_t end) { forward_range(a, begin, end); }
ESBNN_CLONES void backward_f32(const Args<float>& a, int64_t begin, int64_t end, float* sums) {
  backward_range(a, begin, end, sums);
}
void forward_any(const Args<float>& a, int64_t begin, int64_t end) { forward_f32(a, begin, end); }
void forward_any(const Args<double>& a, int64_t begin, int64_t end) { forward_range(a, begin, end); }
void backward_any(const Args<float>& a, int64_t begin, int64_t end, float* sums) { backward_f32(a, begin, end, sums); }
void backward_any(const Args<double>& a, int64_t begin, int64_t end, double* sums) {
  backward_range(a, begin, end, sums);
}

template <typename T>
Args<T> make_args(const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& weight, const at::Tensor& shift, const at::Tensor& src,
                  const c10::optional<at::Tensor>& slope, const c10::optional<at::Tensor>& out_shift, double eps) {
  Args<T> a{};
  a.u = u.data_ptr<T>();
  a.bias = data_or_null<T>(bias);
  a.weight = data_or_null<T>(weight);
  a.shift = shift.data_ptr<T>();
  a.src = src.data_ptr<T>();
  a.slope = data_or_null<T>(slope);
  a.out_shift = data_or_null<T>(out_shift);
  a.M = u.size(0);
  a.K = u.size(1);
  a.C = shift.size(0);
  a.S = src.size(1);
  a.eps = eps;
  return a;
}

void check(bool ok, const char* what) { TORCH_CHECK(ok, "replicated_norm_act (native): ", what); }

void check_shapes(const at::Tensor& u, const at::Tensor& shift, const at::Tensor& src) {
  check(u.dim() == 2 && u.is_contiguous() && src.dim() == 2 && src.is_contiguous() && src.size(0) == u.size(0),
        "u (M, K) and src (M, S) must be contiguous rows of the same tokens");
  const int64_t C = shift.size(0), S = src.size(1);
  check(C % u.size(1) == 0, "the widened width must be a multiple of the unique outputs");
  check(S == C || C % S == 0 || S % C == 0, "the shortcut width must be a multiple or a divisor of the width");
}

constexpr int64_t GRAIN = 64;  // tokens per task

}  // namespace

// (out (M, C), mean (M,), rstd (M,))
std::vector<at::Tensor> forward(const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                                const c10::optional<at::Tensor>& weight, const at::Tensor& shift,
                                const at::Tensor& src, const c10::optional<at::Tensor>& slope,
                                const c10::optional<at::Tensor>& out_shift, double eps) {
  check_shapes(u, shift, src);
  auto out = at::empty({u.size(0), shift.size(0)}, u.options());
  auto mean = at::empty({u.size(0)}, u.options());
  auto rstd = at::empty({u.size(0)}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "replicated_norm_act_forward", [&] {
    auto a = make_args<scalar_t>(u, bias, weight, shift, src, slope, out_shift, eps);
    a.out = out.data_ptr<scalar_t>();
    a.mean = mean.data_ptr<scalar_t>();
    a.rstd = rstd.data_ptr<scalar_t>();
    at::parallel_for(0, a.M, GRAIN, [&](int64_t begin, int64_t end) { forward_any(a, begin, end); });
  });
  return {out, mean, rstd};
}

// (grad_u (M, K), grad_src (M, S), feature sums (5, C): bias, weight, shift, slope, out_shift)
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& u, const at::Tensor& mean,
                                 const at::Tensor& rstd, const c10::optional<at::Tensor>& bias,
                                 const c10::optional<at::Tensor>& weight, const at::Tensor& shift,
                                 const at::Tensor& src, const c10::optional<at::Tensor>& slope, double eps) {
  check_shapes(u, shift, src);
  check(grad.is_contiguous() && grad.size(0) == u.size(0) && grad.size(1) == shift.size(0),
        "grad must be contiguous (M, C)");
  auto grad_u = at::empty_like(u);
  auto grad_src = at::empty_like(src);
  const int64_t threads = at::get_num_threads();
  auto sums = at::zeros({threads, 5, shift.size(0)}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "replicated_norm_act_backward", [&] {
    auto a = make_args<scalar_t>(u, bias, weight, shift, src, slope, c10::nullopt, eps);
    a.grad = grad.data_ptr<scalar_t>();
    a.mean = mean.data_ptr<scalar_t>();
    a.rstd = rstd.data_ptr<scalar_t>();
    a.grad_u = grad_u.data_ptr<scalar_t>();
    a.grad_src = grad_src.data_ptr<scalar_t>();
    scalar_t* all = sums.data_ptr<scalar_t>();
    at::parallel_for(0, a.M, GRAIN, [&](int64_t begin, int64_t end) {
      backward_any(a, begin, end, all + at::get_thread_num() * 5 * a.C);
    });
  });
  return {grad_u, grad_src, sums.sum(0)};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "ES linear epilogue on tokens (LayerNorm, shortcut, RPReLU), forward, one pass");
  m.def("backward", &backward, "ES linear epilogue on tokens (LayerNorm, shortcut, RPReLU), backward, one pass");
}
