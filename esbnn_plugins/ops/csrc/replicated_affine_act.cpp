// The ES epilogue in one pass over the widened tensor, forward and backward (METHOD.md section 2, issue 12).
//
// out[n, c] = prelu(v[n, k] * scale[c] + shift[c] + residual[n, c], slope[c]) + out_shift[c] + skip[n, c]
// for widened channel c = r * K + k (Tensor.repeat's layout, R replicas of K unique channels). Each task
// owns one (sample, unique channel) pair and walks its R replicas, so the unique channel is read once per
// replica from cache and its gradient is summed over the replicas without atomics. Per-channel parameters
// are (C,) or per sample (N, C) (row stride 0 or C); scale, residual, slope, out_shift and skip are optional.
// Channels-last tensors (what torch.compile hands over when it runs the convs channels-last) take the NHWC
// loops: a task owns a block of pixels of one sample, each pixel's widened row is contiguous, and the
// per-channel sums are the task's own, added up per sample afterwards.
// The Python wrapper (esbnn_plugins/ops/fused.py) checks devices, dtypes, shapes and memory formats first.
// ATen's tensor, the ops used and the pybind11 casters, not <torch/extension.h>: the whole C++ frontend
// would double the compile time of the first use.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include "fused_common.h"

#include <algorithm>
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
  int64_t N, block, blocks;  // NHWC: tasks are (sample, block of `block` pixels), `blocks` per sample
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

// NHWC: sample n's per-channel parameters as full rows of C values (defaults where a parameter is absent), so
// that the loops over a pixel's widened row read them contiguously.
template <typename T>
struct Rows {
  std::vector<T> scale, shift, slope, out_shift;
  Rows(const Args<T>& a, int64_t n) : scale(a.C), shift(a.C), slope(a.C), out_shift(a.C) {
    for (int64_t c = 0; c < a.C; ++c) {
      scale[c] = at(a.scale, a.scale_row, n, c, T(1));
      shift[c] = at(a.shift, a.shift_row, n, c, T(0));
      slope[c] = at(a.slope, a.slope_row, n, c, T(1));
      out_shift[c] = at(a.out_shift, a.out_shift_row, n, c, T(0));
    }
  }
};

// One copy (replica r) of a pixel's K unique values, forward: the widened channels r * K .. r * K + K - 1.
template <typename T, bool RES, bool SLOPE, bool SKIP>
inline __attribute__((always_inline)) void forward_copy_nhwc(const T* __restrict__ src, const T* __restrict__ sc,
                                                              const T* __restrict__ sh, const T* __restrict__ sl,
                                                              const T* __restrict__ os, const T* __restrict__ res,
                                                              const T* __restrict__ sk, T* __restrict__ dst,
                                                              int64_t K) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    T x = sh[k] + src[k] * sc[k];
    if (RES) x += res[k];
    if (SLOPE) x = x > T(0) ? x : sl[k] * x;
    x += os[k];
    if (SKIP) x += sk[k];
    dst[k] = x;
  }
}

template <typename T, bool RES, bool SLOPE, bool SKIP>
inline __attribute__((always_inline)) void forward_tasks_nhwc(const Args<T>& a, int64_t begin, int64_t end) {
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / a.blocks, first = (task % a.blocks) * a.block;
    const int64_t last = std::min(first + a.block, a.HW);
    const Rows<T> p(a, n);
    for (int64_t i = first; i < last; ++i) {
      const int64_t pixel = n * a.HW + i;
      const T* src = a.v + pixel * a.K;
      for (int64_t r = 0, c = 0; r < a.R; ++r, c += a.K) {
        const int64_t at_c = pixel * a.C + c;
        forward_copy_nhwc<T, RES, SLOPE, SKIP>(src, p.scale.data() + c, p.shift.data() + c, p.slope.data() + c,
                                              p.out_shift.data() + c, RES ? a.residual + at_c : nullptr,
                                              SKIP ? a.skip + at_c : nullptr, a.out + at_c, a.K);
      }
    }
  }
}

// One copy of a pixel, backward: the gradient before the activation, the four sums, and the copy's share of
// grad_v (the first copy writes it, the others add: ACC).
template <typename T, bool RES, bool SLOPE, bool ACC>
inline __attribute__((always_inline)) void backward_copy_nhwc(
    const T* __restrict__ src, const T* __restrict__ g, const T* __restrict__ res, const T* __restrict__ sc,
    const T* __restrict__ sh, const T* __restrict__ sl, T* __restrict__ s_scale, T* __restrict__ s_shift,
    T* __restrict__ s_slope, T* __restrict__ s_out, T* __restrict__ pre, T* __restrict__ dv, int64_t K) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    T x = sh[k] + src[k] * sc[k];
    if (RES) x += res[k];
    const T gk = g[k];
    T d = gk;
    if (SLOPE) {
      s_slope[k] += x > T(0) ? T(0) : gk * x;
      d = x > T(0) ? gk : sl[k] * gk;
    }
    s_out[k] += gk;
    s_shift[k] += d;
    s_scale[k] += d * src[k];
    if (RES) pre[k] = d;
    dv[k] = ACC ? dv[k] + d * sc[k] : d * sc[k];
  }
}

template <typename T, bool RES, bool SLOPE>
inline __attribute__((always_inline)) void backward_tasks_nhwc(const Args<T>& a, int64_t begin, int64_t end) {
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / a.blocks, block = task % a.blocks, first = block * a.block;
    const int64_t last = std::min(first + a.block, a.HW);
    const Rows<T> p(a, n);
    // this task's sums: partial[block][0..3][n][C] (scale, shift, slope, out_shift)
    T* s_scale = a.g_scale + (block * 4 * a.N + n) * a.C;
    T* s_shift = s_scale + a.N * a.C;
    T* s_slope = s_shift + a.N * a.C;
    T* s_out = s_slope + a.N * a.C;
    std::fill(s_scale, s_scale + a.C, T(0));
    std::fill(s_shift, s_shift + a.C, T(0));
    std::fill(s_slope, s_slope + a.C, T(0));
    std::fill(s_out, s_out + a.C, T(0));
    for (int64_t i = first; i < last; ++i) {
      const int64_t pixel = n * a.HW + i;
      const T* src = a.v + pixel * a.K;
      T* dv = a.grad_v + pixel * a.K;
      for (int64_t r = 0, c = 0; r < a.R; ++r, c += a.K) {
        const int64_t at_c = pixel * a.C + c;
        const T* res = RES ? a.residual + at_c : nullptr;
        T* pre = RES ? a.grad_pre + at_c : nullptr;
        if (r == 0)
          backward_copy_nhwc<T, RES, SLOPE, false>(src, a.grad + at_c, res, p.scale.data() + c, p.shift.data() + c,
                                                   p.slope.data() + c, s_scale + c, s_shift + c, s_slope + c,
                                                   s_out + c, pre, dv, a.K);
        else
          backward_copy_nhwc<T, RES, SLOPE, true>(src, a.grad + at_c, res, p.scale.data() + c, p.shift.data() + c,
                                                  p.slope.data() + c, s_scale + c, s_shift + c, s_slope + c,
                                                  s_out + c, pre, dv, a.K);
      }
    }
  }
}

template <typename T, bool NHWC, bool RES, bool SLOPE, bool SKIP>
inline __attribute__((always_inline)) void forward_layout(const Args<T>& a, int64_t begin, int64_t end) {
  if (NHWC) forward_tasks_nhwc<T, RES, SLOPE, SKIP>(a, begin, end);
  else forward_tasks<T, RES, SLOPE, SKIP>(a, begin, end);
}

template <typename T, bool NHWC, bool RES, bool SLOPE>
inline __attribute__((always_inline)) void backward_layout(const Args<T>& a, int64_t begin, int64_t end) {
  if (NHWC) backward_tasks_nhwc<T, RES, SLOPE>(a, begin, end);
  else backward_tasks<T, RES, SLOPE>(a, begin, end);
}

template <typename T, bool NHWC>
inline __attribute__((always_inline)) void forward_range(const Args<T>& a, int64_t begin, int64_t end) {
  const bool res = a.residual, slope = a.slope, skip = a.skip;
  if (res && slope && skip) forward_layout<T, NHWC, true, true, true>(a, begin, end);
  else if (res && slope) forward_layout<T, NHWC, true, true, false>(a, begin, end);
  else if (res && skip) forward_layout<T, NHWC, true, false, true>(a, begin, end);
  else if (res) forward_layout<T, NHWC, true, false, false>(a, begin, end);
  else if (slope && skip) forward_layout<T, NHWC, false, true, true>(a, begin, end);
  else if (slope) forward_layout<T, NHWC, false, true, false>(a, begin, end);
  else if (skip) forward_layout<T, NHWC, false, false, true>(a, begin, end);
  else forward_layout<T, NHWC, false, false, false>(a, begin, end);
}

template <typename T, bool NHWC>
inline __attribute__((always_inline)) void backward_range(const Args<T>& a, int64_t begin, int64_t end) {
  const bool res = a.residual, slope = a.slope;
  if (res && slope) backward_layout<T, NHWC, true, true>(a, begin, end);
  else if (res) backward_layout<T, NHWC, true, false>(a, begin, end);
  else if (slope) backward_layout<T, NHWC, false, true>(a, begin, end);
  else backward_layout<T, NHWC, false, false>(a, begin, end);
}

ESBNN_CLONES void forward_range_f32(const Args<float>& a, int64_t begin, int64_t end) {
  forward_range<float, false>(a, begin, end);
}
ESBNN_CLONES void backward_range_f32(const Args<float>& a, int64_t begin, int64_t end) {
  backward_range<float, false>(a, begin, end);
}
ESBNN_CLONES void forward_nhwc_f32(const Args<float>& a, int64_t begin, int64_t end) {
  forward_range<float, true>(a, begin, end);
}
ESBNN_CLONES void backward_nhwc_f32(const Args<float>& a, int64_t begin, int64_t end) {
  backward_range<float, true>(a, begin, end);
}
void forward_range_any(const Args<float>& a, bool nhwc, int64_t begin, int64_t end) {
  nhwc ? forward_nhwc_f32(a, begin, end) : forward_range_f32(a, begin, end);
}
void forward_range_any(const Args<double>& a, bool nhwc, int64_t begin, int64_t end) {
  nhwc ? forward_range<double, true>(a, begin, end) : forward_range<double, false>(a, begin, end);
}
void backward_range_any(const Args<float>& a, bool nhwc, int64_t begin, int64_t end) {
  nhwc ? backward_nhwc_f32(a, begin, end) : backward_range_f32(a, begin, end);
}
void backward_range_any(const Args<double>& a, bool nhwc, int64_t begin, int64_t end) {
  nhwc ? backward_range<double, true>(a, begin, end) : backward_range<double, false>(a, begin, end);
}

int64_t row_of(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->dim() == 2 ? t->size(1) : 0;
}

template <typename T>
Args<T> make_args(const at::Tensor& v, int64_t C, const c10::optional<at::Tensor>& scale,
                  const at::Tensor& shift, const c10::optional<at::Tensor>& residual,
                  const c10::optional<at::Tensor>& slope, const c10::optional<at::Tensor>& out_shift) {
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

// Channels-last v (and so every widened tensor): the NHWC loops; else all tensors are contiguous NCHW.
bool channels_last(const at::Tensor& v) {
  return !v.is_contiguous() && v.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::MemoryFormat format_of(bool nhwc) { return nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous; }

void check_format(const c10::optional<at::Tensor>& t, bool nhwc, const char* what) {
  check(!t.has_value() || !t->defined() || t->is_contiguous(format_of(nhwc)), what);
}

// NHWC tasks: blocks of pixels, about four per thread over the batch (none for an empty batch or image).
template <typename T>
void set_blocks(Args<T>& a, int64_t N) {
  const int64_t wanted = (4 * at::get_num_threads() + N - 1) / std::max<int64_t>(N, 1);
  const int64_t per_sample = std::max<int64_t>(1, std::min(wanted, a.HW));
  a.N = N;
  a.block = std::max<int64_t>(1, (a.HW + per_sample - 1) / per_sample);
  a.blocks = (a.HW + a.block - 1) / a.block;
}

}  // namespace

at::Tensor forward(const at::Tensor& v, const c10::optional<at::Tensor>& scale, const at::Tensor& shift,
                   const c10::optional<at::Tensor>& residual, const c10::optional<at::Tensor>& slope,
                   const c10::optional<at::Tensor>& out_shift, const c10::optional<at::Tensor>& skip) {
  const bool nhwc = v.dim() == 4 && channels_last(v);
  check(v.dim() == 4 && (nhwc || v.is_contiguous()), "v must be a contiguous or channels-last (N, K, H, W) tensor");
  check_format(residual, nhwc, "residual must be in v's memory format");
  check_format(skip, nhwc, "skip must be in v's memory format");
  const int64_t N = v.size(0), C = shift.size(-1);
  check(C % v.size(1) == 0, "the widened width must be a multiple of the unique channels");
  auto out = at::empty({N, C, v.size(2), v.size(3)}, v.options().memory_format(format_of(nhwc)));
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "replicated_affine_act_forward", [&] {
    auto a = make_args<scalar_t>(v, C, scale, shift, residual, slope, out_shift);
    a.skip = data_or_null<scalar_t>(skip);
    a.out = out.data_ptr<scalar_t>();
    set_blocks(a, N);
    at::parallel_for(0, nhwc ? N * a.blocks : N * a.K, 1,
                     [&](int64_t begin, int64_t end) { forward_range_any(a, nhwc, begin, end); });
  });
  return out;
}

// (grad_v, per-sample sums (4, N, C) for scale, shift, slope and out_shift, the gradient before the activation
// where there is a residual, else an empty tensor)
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& v,
                                 const c10::optional<at::Tensor>& scale, const at::Tensor& shift,
                                 const c10::optional<at::Tensor>& residual,
                                 const c10::optional<at::Tensor>& slope) {
  const bool nhwc = v.dim() == 4 && channels_last(v);
  const auto format = format_of(nhwc);
  check(grad.is_contiguous(format) && (nhwc || v.is_contiguous()),
        "v must be contiguous or channels-last, and grad in its memory format");
  check_format(residual, nhwc, "residual must be in v's memory format");
  const int64_t N = grad.size(0), C = grad.size(1);
  auto grad_v = at::empty(v.sizes(), v.options().memory_format(format));
  const bool has_residual = residual.has_value() && residual->defined();
  auto grad_pre = has_residual ? at::empty(grad.sizes(), grad.options().memory_format(format))
                               : at::empty({0}, grad.options());
  at::Tensor sums;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "replicated_affine_act_backward", [&] {
    auto a = make_args<scalar_t>(v, C, scale, shift, residual, slope, c10::nullopt);
    set_blocks(a, N);
    // NCHW: one task per (sample, unique channel) writes each sum once; NHWC: each block its own sums
    sums = at::empty({nhwc ? a.blocks : 1, 4, N, C}, v.options());
    a.grad = grad.data_ptr<scalar_t>();
    a.grad_v = grad_v.data_ptr<scalar_t>();
    a.grad_pre = has_residual ? grad_pre.data_ptr<scalar_t>() : nullptr;
    scalar_t* s = sums.data_ptr<scalar_t>();
    a.g_scale = s;
    a.g_shift = s + N * C;
    a.g_slope = s + 2 * N * C;
    a.g_out_shift = s + 3 * N * C;
    at::parallel_for(0, nhwc ? N * a.blocks : N * a.K, 1,
                     [&](int64_t begin, int64_t end) { backward_range_any(a, nhwc, begin, end); });
  });
  return {grad_v, sums.size(0) == 1 ? sums[0] : sums.sum(0), grad_pre};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "ES epilogue forward in one pass over the widened tensor");
  m.def("backward", &backward, "ES epilogue backward in one pass over the widened tensor");
}
