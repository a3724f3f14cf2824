// Packed binary convolution for x86-64 (issue 11; METHOD.md sections 1-2).
//
// Activations and weights are signs packed along channels into 64-bit words (bit 1 = -1, bit 0 = +1;
// the unused bits of a group's last word are 0 in both operands, so they never count). A binary
// output entry is fan_in - 2 * popcount(a XOR w), where fan_in counts the taps inside the input:
// zero padding contributes 0, exactly as the training layer's zero-padded +-1 input does.
// The Python wrapper (esbnn_plugins/deploy/kernel.py) checks every shape and dtype before calling in.
#include <torch/extension.h>
#include <ATen/Parallel.h>
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

namespace portable {
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
#pragma GCC target("avx512f,avx512vpopcntdq")
namespace avx512 {
#define ESBNN_LEVEL 2
#include "binary_conv_body.h"
#undef ESBNN_LEVEL
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
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
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
torch::Tensor pack_signs(const torch::Tensor& x, const c10::optional<torch::Tensor>& shift,
                         const c10::optional<torch::Tensor>& perm, int64_t groups) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cg = C / groups, Cw = (Cg + 63) / 64, HW = H * W;
  auto out = torch::zeros({N, groups, H, W, Cw}, x.options().dtype(torch::kInt64));
  const float* xp = x.data_ptr<float>();
  const float* sp = shift.has_value() ? shift->data_ptr<float>() : nullptr;
  const int64_t* pp = perm.has_value() ? perm->data_ptr<int64_t>() : nullptr;
  uint64_t* op = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  constexpr int64_t kBlock = 256;  // pixels per task: the block's words stay in L1 while channels stream
  const int64_t blocks = (HW + kBlock - 1) / kBlock;
  at::parallel_for(0, N * groups * blocks, 1, [=](int64_t begin, int64_t end) {
    // by-value captures: the uint64_t stores below may not alias them, so they stay in registers
    for (int64_t task = begin; task < end; ++task) {
      const int64_t ng = task / blocks, p0 = (task % blocks) * kBlock;
      const int64_t p1 = std::min(HW, p0 + kBlock), n = ng / groups, g = ng % groups;
      uint64_t* words = op + ng * HW * Cw;
      for (int64_t j = 0; j < Cg; ++j) {
        const int64_t c = pp ? pp[g * Cg + j] : g * Cg + j;
        const float* src = xp + (n * C + c) * HW;
        const float s = sp ? sp[c] : 0.0f;
        const uint64_t bit = 1ULL << (j % 64);
        uint64_t* dst = words + j / 64;
        for (int64_t p = p0; p < p1; ++p) dst[p * Cw] |= (src[p] + s < 0.0f) ? bit : 0ULL;
      }
    }
  });
  return out;
}

// act (N, G, H, W, Cw) and wts (G * ceil(K/G / 8), KH, KW, Cw, 8) int64 words (kernels in blocks of 8,
// interleaved word by word) -> int32 (N, K, Ho, Wo) accumulations.
torch::Tensor binary_conv2d(const torch::Tensor& act, const torch::Tensor& wts, int64_t K, int64_t Cg,
                            std::vector<int64_t> stride, std::vector<int64_t> padding,
                            std::vector<int64_t> dilation, std::vector<int64_t> out_size,
                            const std::string& level) {
  Geometry s;
  s.N = act.size(0); s.G = act.size(1); s.H = act.size(2); s.W = act.size(3); s.Cw = act.size(4);
  s.K = K; s.KH = wts.size(1); s.KW = wts.size(2); s.Kg = s.K / s.G; s.Cg = Cg;
  s.sh = stride[0]; s.sw = stride[1]; s.ph = padding[0]; s.pw = padding[1];
  s.dh = dilation[0]; s.dw = dilation[1]; s.Ho = out_size[0]; s.Wo = out_size[1];
  auto out = torch::empty({s.N, s.K, s.Ho, s.Wo}, act.options().dtype(torch::kInt32));
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
