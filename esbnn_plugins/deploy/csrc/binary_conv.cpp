// Packed binary convolution for x86-64 (issue 11; METHOD.md sections 1-2).
//
// Activations and weights are signs packed along channels into 64-bit words (bit 1 = -1, bit 0 = +1;
// the unused bits of a group's last word are 0 in both operands, so they never count). A binary
// output entry is fan_in - 2 * popcount(a XOR w), where fan_in counts the taps inside the input:
// zero padding contributes 0, exactly as the training layer's zero-padded +-1 input does.
// The Python wrapper (esbnn_plugins/deploy/kernel.py) checks every shape and dtype before calling in.
// ATen's tensor, the ops used and the pybind11 casters, not <torch/extension.h>: the whole C++ frontend
// would double the compile time of the first use.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>
#include <immintrin.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

struct Geometry {
  int64_t N, G, H, W, Cw, Cg, K, Kg, KH, KW, Ho, Wo, sh, sw, ph, pw, dh, dw;
};

// Kernel taps [lo, hi) of output index o that land inside an input of length `size`.
inline void valid_taps(int64_t o, int64_t stride, int64_t pad, int64_t dil, int64_t taps, int64_t size,
                       int64_t& lo, int64_t& hi) {
  const int64_t start = o * stride - pad;  // input index of tap 0
  lo = start >= 0 ? 0 : (-start + dil - 1) / dil;
  const int64_t last = size - 1 - start;
  hi = last < 0 ? 0 : std::min(taps, last / dil + 1);
  if (hi < lo) hi = lo;
}

struct PackArgs {
  const float* x;
  const float* shift;
  const int64_t* perm;
  uint64_t* out;
  int64_t C, G, Cg, Cw, HW;
};

namespace portable {
// Pixels [p0, p1) of image-group `ng`, one channel at a time (the block's words stay in L1).
static void pack_block(const PackArgs& a, int64_t ng, int64_t p0, int64_t p1) {
  const int64_t n = ng / a.G, g = ng % a.G;
  uint64_t* words = a.out + ng * a.HW * a.Cw;
  for (int64_t p = p0; p < p1; ++p) {
    for (int64_t w = 0; w < a.Cw; ++w) words[p * a.Cw + w] = 0;
  }
  for (int64_t j = 0; j < a.Cg; ++j) {
    const int64_t c = a.perm ? a.perm[g * a.Cg + j] : g * a.Cg + j;
    const float* src = a.x + (n * a.C + c) * a.HW;
    const float s = a.shift ? a.shift[c] : 0.0f;
    const uint64_t bit = 1ULL << (j % 64);
    uint64_t* dst = words + j / 64;
    for (int64_t p = p0; p < p1; ++p) dst[p * a.Cw] |= (src[p] + s < 0.0f) ? bit : 0ULL;
  }
}

#define ESBNN_LEVEL 0
#include "binary_conv_body.h"
#undef ESBNN_LEVEL
}  // namespace portable

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ESBNN_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
namespace avx2 {
#define ESBNN_LEVEL 1
#include "binary_conv_body.h"
#undef ESBNN_LEVEL
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq")
namespace avx512 {
#define ESBNN_LEVEL 2
#include "binary_conv_body.h"
#undef ESBNN_LEVEL

// Pixels [p0, p1) of image-group `ng`: 16 pixels of 64 channels are compared at once (one 16-bit mask
// per channel), then the 64x16 bit matrix is transposed into 16 words with AVX-512BW's movepi16_mask.
static void pack_block(const PackArgs& a, int64_t ng, int64_t p0, int64_t p1) {
  const int64_t n = ng / a.G, g = ng % a.G;
  uint64_t* words = a.out + ng * a.HW * a.Cw;
  alignas(64) uint16_t masks[64];
  for (int64_t q = p0; q < p1; q += 16) {
    const int64_t np = p1 - q < 16 ? p1 - q : 16;
    const __mmask16 lanes = (__mmask16)((1u << np) - 1u);
    for (int64_t w = 0; w < a.Cw; ++w) {
      for (int64_t jj = 0; jj < 64; ++jj) {
        const int64_t j = w * 64 + jj;
        if (j >= a.Cg) {
          masks[jj] = 0;
          continue;
        }
        const int64_t c = a.perm ? a.perm[g * a.Cg + j] : g * a.Cg + j;
        const __m512 v = _mm512_maskz_loadu_ps(lanes, a.x + (n * a.C + c) * a.HW + q);
        const __m512 shifted = _mm512_add_ps(v, _mm512_set1_ps(a.shift ? a.shift[c] : 0.0f));
        masks[jj] = _mm512_mask_cmp_ps_mask(lanes, shifted, _mm512_setzero_ps(), _CMP_LT_OQ);
      }
      const __m512i low = _mm512_load_si512((const void*)masks);
      const __m512i high = _mm512_load_si512((const void*)(masks + 32));
      for (int64_t p = 0; p < np; ++p) {
        const __m128i count = _mm_cvtsi32_si128((int)(15 - p));  // bit p of every mask to the sign bit
        const uint64_t lo = (uint32_t)_mm512_movepi16_mask(_mm512_sll_epi16(low, count));
        const uint64_t hi = (uint32_t)_mm512_movepi16_mask(_mm512_sll_epi16(high, count));
        words[(q + p) * a.Cw + w] = lo | (hi << 32);
      }
    }
  }
}
}  // namespace avx512
#pragma GCC pop_options
#endif

using RowFn = void (*)(const Geometry&, const uint64_t*, const uint64_t*, int32_t*, int64_t, int64_t, int64_t);

// Levels this CPU (and this build) can run, best last: "portable", "avx2", "avx512_vpopcntdq".
std::vector<std::string> supported_levels() {
  std::vector<std::string> levels{"portable"};
#ifdef ESBNN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) levels.push_back("avx2");
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vpopcntdq"))
    levels.push_back("avx512_vpopcntdq");
#endif
  return levels;
}

RowFn row_function(const std::string& level) {
#ifdef ESBNN_X86
  if (level == "avx512_vpopcntdq") return avx512::conv_row;
  if (level == "avx2") return avx2::conv_row;
#endif
  return portable::conv_row;
}

// x (N, C, H, W) float32 -> int64 words (N, G, H, W, Cw), Cw = ceil((C/G)/64); channel j of group g
// reads input channel perm[g*C/G + j] (identity without perm); its bit is 1 where x + shift < 0.
at::Tensor pack_signs(const at::Tensor& x, const c10::optional<at::Tensor>& shift,
                      const c10::optional<at::Tensor>& perm, int64_t groups, const std::string& level) {
  PackArgs a;
  const int64_t N = x.size(0);
  a.C = x.size(1); a.G = groups; a.Cg = a.C / groups; a.Cw = (a.Cg + 63) / 64; a.HW = x.size(2) * x.size(3);
  auto out = at::empty({N, groups, x.size(2), x.size(3), a.Cw}, x.options().dtype(at::kLong));
  a.x = x.data_ptr<float>();
  a.shift = shift.has_value() ? shift->data_ptr<float>() : nullptr;
  a.perm = perm.has_value() ? perm->data_ptr<int64_t>() : nullptr;
  a.out = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  auto block = portable::pack_block;
#ifdef ESBNN_X86
  if (level == "avx512_vpopcntdq") block = avx512::pack_block;
#endif
  constexpr int64_t kBlock = 256;  // pixels per task
  const int64_t blocks = (a.HW + kBlock - 1) / kBlock;
  at::parallel_for(0, N * groups * blocks, 1, [=](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p0 = (task % blocks) * kBlock;
      block(a, task / blocks, p0, std::min(a.HW, p0 + kBlock));
    }
  });
  return out;
}

// act (N, G, H, W, Cw) and wts (G * ceil(K/G / 8), KH, KW, Cw, 8) int64 words (kernels in blocks of 8,
// interleaved word by word) -> int32 (N, K, Ho, Wo) accumulations.
at::Tensor binary_conv2d(const at::Tensor& act, const at::Tensor& wts, int64_t K, int64_t Cg,
                         std::vector<int64_t> stride, std::vector<int64_t> padding,
                         std::vector<int64_t> dilation, std::vector<int64_t> out_size,
                         const std::string& level) {
  Geometry s;
  s.N = act.size(0); s.G = act.size(1); s.H = act.size(2); s.W = act.size(3); s.Cw = act.size(4);
  s.K = K; s.KH = wts.size(1); s.KW = wts.size(2); s.Kg = s.K / s.G; s.Cg = Cg;
  s.sh = stride[0]; s.sw = stride[1]; s.ph = padding[0]; s.pw = padding[1];
  s.dh = dilation[0]; s.dw = dilation[1]; s.Ho = out_size[0]; s.Wo = out_size[1];
  auto out = at::empty({s.N, s.K, s.Ho, s.Wo}, act.options().dtype(at::kInt));
  const uint64_t* ap = reinterpret_cast<const uint64_t*>(act.data_ptr<int64_t>());
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(wts.data_ptr<int64_t>());
  int32_t* op = out.data_ptr<int32_t>();
  const RowFn row = row_function(level);
  at::parallel_for(0, s.N * s.G * s.Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      row(s, ap, wp, op, r / (s.G * s.Ho), (r / s.Ho) % s.G, r % s.Ho);
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("supported_levels", &supported_levels, "instruction-set levels this CPU runs, best last");
  m.def("pack_signs", &pack_signs, "pack signs along channels into 64-bit words");
  m.def("binary_conv2d", &binary_conv2d, "packed binary conv: int32 accumulations");
}
