// The ES epilogue in one pass over the widened tensor, forward and backward (METHOD.md section 2, issue 12).
//
// out[n, c] = prelu(v[n, k] * scale[c] + shift[c] + residual[n, c], slope[c]) + out_shift[c] + skip[n, c]
// for widened channel c = r * K + k (Tensor.repeat's layout, R replicas of K unique channels). Each task
// owns one (sample, unique channel) pair and walks its R replicas, so the unique channel is read once per
// replica from cache and its gradient is summed over the replicas without atomics. Per-channel parameters
// are (C,) or per sample (N, C) (row stride 0 or C); scale, residual, slope, out_shift and skip are optional.
// The Python wrapper (esbnn_plugins/ops/fused.py) checks devices, dtypes, shapes and contiguity first.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "fused_common.h"

#include <cstdint>
#include <vector>

namespace {

using esbnn::data_or_null;

// Everything a task needs; per-channel parameters are read at [n * row + c] (row 0: per channel, C: per sample).
template <typename T>
struct Args {
  const T *v, *grad, *residual, *skip, *scale, *shift, *slope, *out_shift;
  int64_t scale_row, shift_row, slope_row, out_shift_row;
  T *out, *grad_v, *grad_pre, *g_scale, *g_shift, *g_slope, *g_out_shift;
  int64_t K, C, R, HW;
};

template <typename T>
inline T at(const T* p, int64_t row, int64_t n, int64_t c, T fallback) {
  return p ? p[n * row + c] : fallback;
}

// The branches are template parameters so that every inner loop is one straight, vectorisable pass.
template <typename T, bool RES, bool SLOPE, bool SKIP>
inline __attribute__((always_inline)) void forward_tasks(const Args<T>& a, int64_t begin, int64_t end) {
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / a.K, k = task % a.K;
    const T* __restrict__ src = a.v + (n * a.K + k) * a.HW;
    for (int64_t r = 0; r < a.R; ++r) {
      const int64_t c = r * a.K + k, offset = (n * a.C + c) * a.HW;
      const T sc = at(a.scale, a.scale_row, n, c, T(1)), sh = at(a.shift, a.shift_row, n, c, T(0));
      const T sl = at(a.slope, a.slope_row, n, c, T(1)), os = at(a.out_shift, a.out_shift_row, n, c, T(0));
      const T* __restrict__ res = RES ? a.residual + offset : nullptr;
      const T* __restrict__ sk = SKIP ? a.skip + offset : nullptr;
      T* __restrict__ dst = a.out + offset;
#pragma omp simd
      for (int64_t i = 0; i < a.HW; ++i) {
        T x = sh + src[i] * sc;
        if (RES) x += res[i];
        if (SLOPE) x = x > T(0) ? x : sl * x;
        x += os;
        if (SKIP) x += sk[i];
        dst[i] = x;
      }
    }
  }
}

// One replica's row: the gradient before the activation, its four sums, and its share of grad_v (the first
// replica writes it, the others add: ACC).
template <typename T, bool RES, bool SLOPE, bool ACC>
inline __attribute__((always_inline)) void backward_row(const T* __restrict__ src, const T* __restrict__ g,
                                                        const T* __restrict__ res, T* __restrict__ pre,
                                                        T* __restrict__ dv, T sc, T sh, T sl, int64_t HW, T* sums) {
  T s_scale = 0, s_shift = 0, s_slope = 0, s_out = 0;
#pragma omp simd reduction(+ : s_scale, s_shift, s_slope, s_out)
  for (int64_t i = 0; i < HW; ++i) {
    T x = sh + src[i] * sc;
    if (RES) x += res[i];
    const T gi = g[i];
    T d = gi;
    if (SLOPE) {
      s_slope += x > T(0) ? T(0) : gi * x;
      d = x > T(0) ? gi : sl * gi;
    }
    s_out += gi;
    s_shift += d;
    s_scale += d * src[i];
    if (RES) pre[i] = d;
    dv[i] = ACC ? dv[i] + d * sc : d * sc;
  }
  sums[0] = s_scale;
  sums[1] = s_shift;
  sums[2] = s_slope;
  sums[3] = s_out;
}

template <typename T, bool RES, bool SLOPE>
inline __attribute__((always_inline)) void backward_tasks(const Args<T>& a, int64_t begin, int64_t end) {
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / a.K, k = task % a.K;
    const T* src = a.v + (n * a.K + k) * a.HW;
    T* dv = a.grad_v + (n * a.K + k) * a.HW;
    for (int64_t r = 0; r < a.R; ++r) {
      const int64_t c = r * a.K + k, offset = (n * a.C + c) * a.HW;
      const T sc = at(a.scale, a.scale_row, n, c, T(1)), sh = at(a.shift, a.shift_row, n, c, T(0));
      const T sl = at(a.slope, a.slope_row, n, c, T(1));
      const T* res = RES ? a.residual + offset : nullptr;
      T* pre = RES ? a.grad_pre + offset : nullptr;  // the residual's gradient
      T sums[4];
      if (r == 0) backward_row<T, RES, SLOPE, false>(src, a.grad + offset, res, pre, dv, sc, sh, sl, a.HW, sums);
      else backward_row<T, RES, SLOPE, true>(src, a.grad + offset, res, pre, dv, sc, sh, sl, a.HW, sums);
      const int64_t at_nc = n * a.C + c;
      a.g_scale[at_nc] = sums[0];
      a.g_shift[at_nc] = sums[1];
      a.g_slope[at_nc] = sums[2];
      a.g_out_shift[at_nc] = sums[3];
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void forward_range(const Args<T>& a, int64_t begin, int64_t end) {
  const bool res = a.residual, slope = a.slope, skip = a.skip;
  if (res && slope && skip) forward_tasks<T, true, true, true>(a, begin, end);
  else if (res && slope) forward_tasks<T, true, true, false>(a, begin, end);
  else if (res && skip) forward_tasks<T, true, false, true>(a, begin, end);
  else if (res) forward_tasks<T, true, false, false>(a, begin, end);
  else if (slope && skip) forward_tasks<T, false, true, true>(a, begin, end);
  else if (slope) forward_tasks<T, false, true, false>(a, begin, end);
  else if (skip) forward_tasks<T, false, false, true>(a, begin, end);
  else forward_tasks<T, false, false, false>(a, begin, end);
}

template <typename T>
inline __attribute__((always_inline)) void backward_range(const Args<T>& a, int64_t begin, int64_t end) {
  const bool res = a.residual, slope = a.slope;
  if (res && slope) backward_tasks<T, true, true>(a, begin, end);
  else if (res) backward_tasks<T, true, false>(a, begin, end);
  else if (slope) backward_tasks<T, false, true>(a, begin, end);
  else backward_tasks<T, false, false>(a, begin, end);
}

ESBNN_CLONES void forward_range_f32(const Args<float>& a, int64_t begin, int64_t end) { forward_range(a, begin, end); }
ESBNN_CLONES void backward_range_f32(const Args<float>& a, int64_t begin, int64_t end) { backward_range(a, begin, end); }
void forward_range_any(const Args<float>& a, int64_t begin, int64_t end) { forward_range_f32(a, begin, end); }
void forward_range_any(const Args<double>& a, int64_t begin, int64_t end) { forward_range(a, begin, end); }
void backward_range_any(const Args<float>& a, int64_t begin, int64_t end) { backward_range_f32(a, begin, end); }
void backward_range_any(const Args<double>& a, int64_t begin, int64_t end) { backward_range(a, begin, end); }

int64_t row_of(const c10::optional<torch::Tensor>& t) {
  return t.has_value() && t->defined() && t->dim() == 2 ? t->size(1) : 0;
}

template <typename T>
Args<T> make_args(const torch::Tensor& v, int64_t C, const c10::optional<torch::Tensor>& scale,
                  const torch::Tensor& shift, const c10::optional<torch::Tensor>& residual,
                  const c10::optional<torch::Tensor>& slope, const c10::optional<torch::Tensor>& out_shift) {
  Args<T> a{};
  a.v = v.data_ptr<T>();
  a.residual = data_or_null<T>(residual);
  a.scale = data_or_null<T>(scale);
  a.shift = shift.data_ptr<T>();
  a.slope = data_or_null<T>(slope);
  a.out_shift = data_or_null<T>(out_shift);
  a.scale_row = row_of(scale);
  a.shift_row = shift.dim() == 2 ? shift.size(1) : 0;
  a.slope_row = row_of(slope);
  a.out_shift_row = row_of(out_shift);
  a.K = v.size(1);
  a.C = C;
  a.R = C / a.K;
  a.HW = v.size(2) * v.size(3);
  return a;
}

void check(bool ok, const char* what) { TORCH_CHECK(ok, "replicated_affine_act (native): ", what); }

}  // namespace

torch::Tensor forward(const torch::Tensor& v, const c10::optional<torch::Tensor>& scale, const torch::Tensor& shift,
                      const c10::optional<torch::Tensor>& residual, const c10::optional<torch::Tensor>& slope,
                      const c10::optional<torch::Tensor>& out_shift, const c10::optional<torch::Tensor>& skip) {
  check(v.dim() == 4 && v.is_contiguous(), "v must be a contiguous (N, K, H, W) tensor");
  const int64_t C = shift.size(-1);
  check(C % v.size(1) == 0, "the widened width must be a multiple of the unique channels");
  auto out = torch::empty({v.size(0), C, v.size(2), v.size(3)}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "replicated_affine_act_forward", [&] {
    auto a = make_args<scalar_t>(v, C, scale, shift, residual, slope, out_shift);
    a.skip = data_or_null<scalar_t>(skip);
    a.out = out.data_ptr<scalar_t>();
    at::parallel_for(0, v.size(0) * a.K, 1, [&](int64_t begin, int64_t end) { forward_range_any(a, begin, end); });
  });
  return out;
}

// (grad_v, per-sample sums (N, C) for scale, shift, slope and out_shift, the gradient before the activation
// where there is a residual, else an undefined tensor)
std::vector<torch::Tensor> backward(const torch::Tensor& grad, const torch::Tensor& v,
                                    const c10::optional<torch::Tensor>& scale, const torch::Tensor& shift,
                                    const c10::optional<torch::Tensor>& residual,
                                    const c10::optional<torch::Tensor>& slope) {
  check(grad.is_contiguous() && v.is_contiguous(), "grad and v must be contiguous");
  const int64_t N = grad.size(0), C = grad.size(1);
  auto grad_v = torch::empty_like(v);
  auto sums = torch::empty({4, N, C}, v.options());
  torch::Tensor grad_pre;
  if (residual.has_value() && residual->defined()) grad_pre = torch::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "replicated_affine_act_backward", [&] {
    auto a = make_args<scalar_t>(v, C, scale, shift, residual, slope, c10::nullopt);
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_v = grad_v.data_ptr<scalar_t>();
    a.grad_pre = grad_pre.defined() ? grad_pre.data_ptr<scalar_t>() : nullptr;
    scalar_t* s = sums.data_ptr<scalar_t>();
    a.g_scale = s;
    a.g_shift = s + N * C;
    a.g_slope = s + 2 * N * C;
    a.g_out_shift = s + 3 * N * C;
    at::parallel_for(0, N * a.K, 1, [&](int64_t begin, int64_t end) { backward_range_any(a, begin, end); });
  });
  return {grad_v, sums[0], sums[1], sums[2], sums[3], grad_pre};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "ES epilogue forward in one pass over the widened tensor");
  m.def("backward", &backward, "ES epilogue backward in one pass over the widened tensor");
}
