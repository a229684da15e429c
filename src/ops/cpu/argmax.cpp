#include "ops/argmax.h"

#include <cstdint>
#include <limits>

#include "ops/cpu/vec.h"

namespace mamba::ops::cpu {

namespace {

// The largest number among row[0, n), NaN skipped; −∞ when there is none.
float largest_number(const float* row, int64_t n) {
  float best = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#ifdef MAMBA_CPU_AVX512
  // max_ps returns its second operand when the first is NaN, so NaN never enters `lanes`.
  __m512 lanes = _mm512_set1_ps(best);
  for (; j + 16 <= n; j += 16) lanes = _mm512_max_ps(_mm512_loadu_ps(row + j), lanes);
  best = _mm512_reduce_max_ps(lanes);
#endif
  for (; j < n; ++j)
    if (row[j] > best) best = row[j];  // false for NaN
  return best;
}

// The first j < n with row[j] == value, or 0 when there is none (a row without numbers).
int64_t first_position_of(const float* row, int64_t n, float value) {
  int64_t j = 0;
#ifdef MAMBA_CPU_AVX512
  const __m512 target = _mm512_set1_ps(value);
  for (; j + 16 <= n; j += 16)
    if (const __mmask16 hits = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), target, _CMP_EQ_OQ))
      return j + __builtin_ctz(hits);
#endif
  for (; j < n; ++j)
    if (row[j] == value) return j;
  return 0;
}

}  // namespace

// Two vector passes per row (the largest number, then its first position) instead of the
// reference's float64 copy and branchy loop: greedy decoding calls this once per token on
// 50,280 logits.
Tensor argmax_rows(const Tensor& x, int64_t columns) {
  if (x.dtype() != DType::f32) return ref::argmax_rows(x, columns);
  const int64_t rows = x.size(0), width = x.size(1), n = columns < 0 ? width : columns;
  Tensor out = Tensor::empty({rows}, DType::i32);
  for (int64_t m = 0; m < rows; ++m) {
    const float* row = x.data<float>() + m * width;
    out.data<int32_t>()[m] = int32_t(first_position_of(row, n, largest_number(row, n)));
  }
  return out;
}

void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into) {
  const Tensor ids = argmax_rows(x, columns);
  for (Tensor out : into) out.copy_from(ids);
}

}  // namespace mamba::ops::cpu
