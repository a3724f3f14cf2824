// One instruction-set level of the packed binary convolution (METHOD.md section 1: a binary output
// entry is fan_in - 2 * popcount(a XOR w)). binary_conv.cpp includes this file three times, each
// time inside a different `#pragma GCC target` region and namespace, with ESBNN_LEVEL set to
// 0 (portable), 1 (AVX2 + POPCNT) or 2 (AVX-512F/BW + VPOPCNTDQ); the compiler builds all three.

// Kernels are stored in blocks of 8, interleaved word by word: block (KH, KW, Cw, 8). Each activation
// word is XORed with the same word of 8 kernels at once; the 8 counts stay in 8 lanes, no horizontal sum.
// span8 adds popcount(a[i] ^ w[i*8 + lane]) over i < len into lane `lane` of acc.
#if ESBNN_LEVEL == 2
struct Acc { __m512i v; };
static inline void acc_zero(Acc& acc) { acc.v = _mm512_setzero_si512(); }
static inline void acc_store(const Acc& acc, int64_t* lanes) { _mm512_storeu_si512((void*)lanes, acc.v); }
static inline void span8(const uint64_t* a, const uint64_t* w, int64_t len, Acc& acc) {
  __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();  // two chains for latency
  int64_t i = 0;
  for (; i + 2 <= len; i += 2) {
    const __m512i x0 = _mm512_xor_si512(_mm512_set1_epi64((long long)a[i]), _mm512_loadu_si512(w + i * 8));
    const __m512i x1 = _mm512_xor_si512(_mm512_set1_epi64((long long)a[i + 1]), _mm512_loadu_si512(w + i * 8 + 8));
    even = _mm512_add_epi64(even, _mm512_popcnt_epi64(x0));
    odd = _mm512_add_epi64(odd, _mm512_popcnt_epi64(x1));
  }
  if (i < len) {
    const __m512i x0 = _mm512_xor_si512(_mm512_set1_epi64((long long)a[i]), _mm512_loadu_si512(w + i * 8));
    even = _mm512_add_epi64(even, _mm512_popcnt_epi64(x0));
  }
  acc.v = _mm512_add_epi64(acc.v, _mm512_add_epi64(even, odd));
}
#elif ESBNN_LEVEL == 1
struct Acc { __m256i lo, hi; };
static inline void acc_zero(Acc& acc) { acc.lo = acc.hi = _mm256_setzero_si256(); }
static inline void acc_store(const Acc& acc, int64_t* lanes) {
  _mm256_storeu_si256((__m256i*)lanes, acc.lo);
  _mm256_storeu_si256((__m256i*)(lanes + 4), acc.hi);
}
// Byte-wise popcount by nibble lookup (Mula, Kurz, Lemire 2018), summed into 64-bit lanes.
static inline __m256i popcnt256(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256());
}
static inline void span8(const uint64_t* a, const uint64_t* w, int64_t len, Acc& acc) {
  for (int64_t i = 0; i < len; ++i) {
    const __m256i va = _mm256_set1_epi64x((long long)a[i]);
    const __m256i w0 = _mm256_loadu_si256((const __m256i*)(w + i * 8));
    const __m256i w1 = _mm256_loadu_si256((const __m256i*)(w + i * 8 + 4));
    acc.lo = _mm256_add_epi64(acc.lo, popcnt256(_mm256_xor_si256(va, w0)));
    acc.hi = _mm256_add_epi64(acc.hi, popcnt256(_mm256_xor_si256(va, w1)));
  }
}
#else
struct Acc { int64_t v[8]; };
static inline void acc_zero(Acc& acc) { for (int b = 0; b < 8; ++b) acc.v[b] = 0; }
static inline void acc_store(const Acc& acc, int64_t* lanes) { for (int b = 0; b < 8; ++b) lanes[b] = acc.v[b]; }
// Portable: SWAR popcount (no POPCNT instruction assumed).
static inline int64_t popcnt64(uint64_t x) {
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return (int64_t)((x * 0x0101010101010101ULL) >> 56);
}
static inline void span8(const uint64_t* a, const uint64_t* w, int64_t len, Acc& acc) {
  for (int64_t i = 0; i < len; ++i) {
    for (int b = 0; b < 8; ++b) acc.v[b] += popcnt64(a[i] ^ w[i * 8 + b]);
  }
}
#endif

// Output row (n, g, oh) of the packed conv: all Kg kernels of group g at every output column.
// Taps that fall into the zero padding contribute nothing: each output counts its valid taps.
static void conv_row(const Geometry& s, const uint64_t* act, const uint64_t* wts, int32_t* out,
                     int64_t n, int64_t g, int64_t oh) {
  int64_t kh_lo, kh_hi;
  valid_taps(oh, s.sh, s.ph, s.dh, s.KH, s.H, kh_lo, kh_hi);
  const uint64_t* act_ng = act + (n * s.G + g) * s.H * s.W * s.Cw;
  const int64_t block_words = s.KH * s.KW * s.Cw * 8;
  const int64_t blocks = (s.Kg + 7) / 8;
  for (int64_t ow = 0; ow < s.Wo; ++ow) {
    int64_t kw_lo, kw_hi;
    valid_taps(ow, s.sw, s.pw, s.dw, s.KW, s.W, kw_lo, kw_hi);
    const int64_t fan_in = (kh_hi - kh_lo) * (kw_hi - kw_lo) * s.Cg;
    const int64_t iw0 = ow * s.sw - s.pw + kw_lo * s.dw;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const uint64_t* w = wts + (g * blocks + blk) * block_words;
      Acc acc;
      acc_zero(acc);
      for (int64_t kh = kh_lo; kh < kh_hi; ++kh) {
        const uint64_t* a_row = act_ng + (oh * s.sh - s.ph + kh * s.dh) * s.W * s.Cw;
        const uint64_t* w_row = w + kh * s.KW * s.Cw * 8;
        if (s.dw == 1) {  // the valid taps of a kernel row are contiguous words in both operands
          span8(a_row + iw0 * s.Cw, w_row + kw_lo * s.Cw * 8, (kw_hi - kw_lo) * s.Cw, acc);
        } else {
          for (int64_t kw = kw_lo; kw < kw_hi; ++kw) {
            span8(a_row + (iw0 + (kw - kw_lo) * s.dw) * s.Cw, w_row + kw * s.Cw * 8, s.Cw, acc);
          }
        }
      }
      int64_t lanes[8];
      acc_store(acc, lanes);
      const int64_t valid = s.Kg - blk * 8 < 8 ? s.Kg - blk * 8 : 8;  // the last block's padding kernels
      for (int64_t b = 0; b < valid; ++b) {
        const int64_t k = g * s.Kg + blk * 8 + b;
        out[((n * s.K + k) * s.Ho + oh) * s.Wo + ow] = (int32_t)(fan_in - 2 * lanes[b]);
      }
    }
  }
}
