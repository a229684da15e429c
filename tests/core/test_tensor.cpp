#include <gtest/gtest.h>

#include <atomic>
#include <cmath>

#include "core/memory_probe.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"

namespace mamba {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 lies exactly between two bf16 values; ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    uint16_t bits = uint16_t(h);
    float f = f16_to_f32(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), bits) << "half bits " << h;
  }
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_FLOAT_EQ(f16_to_f32(f32_to_f16(0.1f)), 0.0999755859375f);
}

TEST(Tensor, ViewSliceAndConvert) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2}, DType::f32);
  Tensor rows = t.slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.item(0), 3);
  Tensor flat = t.view({-1});
  EXPECT_EQ(flat.shape(), (Shape{6}));
  Tensor half = t.to(DType::bf16);
  EXPECT_EQ(half.to(DType::f64).item(5), 6);
  EXPECT_THROW(t.view({4, 2}), Error);
  EXPECT_THROW(t.data<double>(), Error);
}

// Rows padded apart: copies, conversions, slices and element access see only the elements, code
// that would read the padding as elements (raw, data, view) is refused.
TEST(Tensor, PaddedRowsHoldTheSameElements) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2}, DType::f32);
  Tensor padded = t.with_row_stride(5);
  EXPECT_FALSE(padded.is_contiguous());
  EXPECT_EQ(padded.shape(), t.shape());
  EXPECT_EQ(padded.row_stride(), 5);
  EXPECT_EQ(padded.nbytes(), 3 * 5 * sizeof(float));
  EXPECT_EQ(padded.to_double_vector(), t.to_double_vector());
  EXPECT_EQ(padded.item(3), 4);
  EXPECT_EQ(padded.slice(1, 3).item(2), 5);
  EXPECT_TRUE(padded.clone().is_contiguous());
  EXPECT_EQ(padded.to(DType::bf16).to_double_vector(), t.to_double_vector());
  Tensor back = Tensor::zeros({3, 2}, DType::f64).with_row_stride(3);
  back.copy_from(padded);
  EXPECT_EQ(back.to_double_vector(), t.to_double_vector());
  EXPECT_THROW(padded.raw(), Error);
  EXPECT_THROW(padded.data<float>(), Error);
  EXPECT_THROW(padded.view({6}), Error);
  EXPECT_THROW(padded.with_row_stride(1), Error);
  EXPECT_TRUE(t.with_row_stride(2).is_contiguous());
}

// A freed CPU block is handed to the next tensor of the same size (decode allocates the same sizes
// every step), still 64-byte aligned, and zeros() clears what the last owner left in it.
TEST(Tensor, FreedHostBlocksAreReusedBySize) {
  const void* first = nullptr;
  {
    Tensor t = Tensor::from_vector(std::vector<double>(1000, 7.0), {1000}, DType::f32);
    first = t.raw();
  }
  Tensor again = Tensor::zeros({250, 4}, DType::f32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(again.raw()) % 64, 0u);
  for (double v : again.to_double_vector()) ASSERT_EQ(v, 0.0);
  if (!host_blocks_reused()) GTEST_SKIP() << "AddressSanitizer builds free every block";
  EXPECT_EQ(again.raw(), first);
}

TEST(Tensor, RelativeErrorSeesNaN) {
  Tensor a = Tensor::from_vector({1, NAN}, {2}, DType::f32);
  Tensor b = Tensor::from_vector({1, 2}, {2}, DType::f32);
  EXPECT_TRUE(std::isnan(relative_error(a, b)));
  EXPECT_DOUBLE_EQ(relative_error(b, b), 0.0);
}

TEST(Threads, RangesCoverEverythingOnce) {
  set_num_threads(2);
  std::vector<int> hits(1001, 0);
  parallel_for(1001, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) hits[size_t(i)] += 1;
  });
  for (int h : hits) ASSERT_EQ(h, 1);
  EXPECT_THROW(parallel_for(4, [](int64_t, int64_t, int) { fail("boom"); }), Error);
}

TEST(Threads, ChunksCoverEverythingOnceInChunkSizedPieces) {
  set_num_threads(2);
  std::vector<std::atomic<int>> hits(1001);
  std::atomic<int> pieces = 0;
  parallel_for_chunks(1001, 64, [&](int64_t b, int64_t e, int chunk) {
    EXPECT_EQ(b, chunk * 64);
    EXPECT_EQ(e, std::min<int64_t>(1001, b + 64));
    for (int64_t i = b; i < e; ++i) hits[size_t(i)] += 1;
    pieces += 1;
  });
  for (const auto& h : hits) ASSERT_EQ(h.load(), 1);
  EXPECT_EQ(pieces.load(), 16);
  EXPECT_THROW(parallel_for_chunks(100, 0, [](int64_t, int64_t, int) {}), Error);
  EXPECT_THROW(parallel_for_chunks(100, 10, [](int64_t, int64_t, int) { fail("boom"); }), Error);
}

// Many short runs back to back, as in decode: the threads claim ranges against each other and
// each run must still see every range once, and only its own (a worker may still be leaving the
// run before), whatever the timing.
TEST(Threads, BackToBackRunsEachRunEveryRangeOnce) {
  set_num_threads(2);
  for (int run = 0; run < 3000; ++run) {
    const int64_t n = 1 + run % 23;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for_chunks(n, 1, [&](int64_t b, int64_t, int) { hits[size_t(b)] += 1; });
    for (const auto& h : hits) ASSERT_EQ(h.load(), 1) << "run " << run;
  }
}

TEST(MemoryProbe, ReadsBuffersOfAnySizeIncludingEmptyOnes) {
  set_num_threads(2);
  std::vector<std::byte> big(3'000'001, std::byte{1}), small(7, std::byte{2});
  const std::vector<std::span<const std::byte>> buffers{{}, big, {}, small, {}};
  const double seconds = seconds_to_read(buffers, 2);
  EXPECT_GT(seconds, 0.0);
  EXPECT_LT(seconds, 10.0);
  EXPECT_THROW(seconds_to_read(buffers, 0), Error);
}

TEST(Rng, SameSeedSameStream) {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(Rng(7).next_u64(), c.next_u64());
}

}  // namespace mamba
