#include <gtest/gtest.h>

#include <set>

#include "temp_dir.h"
#include "train/data.h"

namespace mamba::train {
namespace {

std::vector<int32_t> ids_of(const Tensor& t) {
  std::vector<int32_t> v(size_t(t.numel()));
  std::copy_n(t.data<int32_t>(), v.size(), v.begin());
  return v;
}

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no mamba::Error thrown";
  return "";
}

TEST(TokenFiles, BytesAndLittleEndianIds) {
  TempDir dir;
  std::string bytes = dir.write("bytes.bin", std::string("\x00\x7f\xff\x41", 4));
  EXPECT_EQ(read_byte_tokens(bytes), (std::vector<int32_t>{0, 127, 255, 65}));
  // uint16: 0x0102 = 258, 0xffff = 65535; uint32: 0x00010000 = 65536.
  std::string u16 = dir.write("u16.bin", std::string("\x02\x01\xff\xff", 4));
  EXPECT_EQ(read_token_file(u16, 2, 65536), (std::vector<int32_t>{258, 65535}));
  std::string u32 = dir.write("u32.bin", std::string("\x00\x00\x01\x00\x05\x00\x00\x00", 8));
  EXPECT_EQ(read_token_file(u32, 4, 70000), (std::vector<int32_t>{65536, 5}));
}

TEST(TokenFiles, ClearErrorsForBadIdsSizesAndFlags) {
  TempDir dir;
  std::string u16 = dir.write("u16.bin", std::string("\x02\x00\x10\x27", 4));  // ids 2, 10000
  std::string message = expect_error([&] { read_token_file(u16, 2, 50280 / 10); });
  EXPECT_NE(message.find("token 1"), std::string::npos) << message;
  EXPECT_NE(message.find("10000"), std::string::npos) << message;
  EXPECT_NE(message.find("u16.bin"), std::string::npos) << message;
  message = expect_error([&] { read_token_file(dir.write("odd.bin", "abc"), 2, 1000); });
  EXPECT_NE(message.find("--token-bytes"), std::string::npos) << message;
  message = expect_error([&] { read_token_file(u16, 3, 1000); });
  EXPECT_NE(message.find("--token-bytes"), std::string::npos) << message;
  message = expect_error([&] { read_byte_tokens(dir.file("missing.bin")); });
  EXPECT_NE(message.find("missing.bin"), std::string::npos) << message;
}

// Tokens 0, 1, 2, … so a window's first id is its start.
std::unique_ptr<DataSource> counting_source(int64_t n, int64_t seq_len, double val_fraction, uint64_t seed) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) tokens[size_t(i)] = int32_t(i);
  return make_stream_source(tokens, n, Metric::bits_per_token, 0, {seq_len, val_fraction, seed}, "counting");
}

TEST(StreamSource, RandomWindowsInsideTheTrainingPart) {
  const int64_t n = 1000, length = 16;
  auto source = counting_source(n, length, 0.1, 42);  // training part: tokens [0, 900)
  std::set<int32_t> starts;
  for (int step = 0; step < 50; ++step) {
    Batch b = source->train_batch(4);
    ASSERT_EQ(b.ids.shape(), (Shape{4, length}));
    ASSERT_EQ(b.targets.shape(), (Shape{4, length}));
    std::vector<int32_t> ids = ids_of(b.ids), targets = ids_of(b.targets);
    for (int64_t row = 0; row < 4; ++row) {
      int32_t start = ids[size_t(row * length)];
      starts.insert(start);
      EXPECT_LE(start + length, 899);  // the last target is still a training token
      for (int64_t t = 0; t < length; ++t) {
        EXPECT_EQ(ids[size_t(row * length + t)], start + t);
        EXPECT_EQ(targets[size_t(row * length + t)], start + t + 1);
      }
    }
  }
  EXPECT_GT(starts.size(), 150u);  // spread over the file, not a few fixed places
}

TEST(StreamSource, SeededAndResumableFromRngState) {
  auto a = counting_source(5000, 32, 0.05, 1), b = counting_source(5000, 32, 0.05, 1);
  auto c = counting_source(5000, 32, 0.05, 2);
  EXPECT_EQ(ids_of(a->train_batch(8).ids), ids_of(b->train_batch(8).ids));
  EXPECT_NE(ids_of(a->train_batch(8).ids), ids_of(c->train_batch(8).ids));
  uint64_t state[4];
  a->get_rng_state(state);
  std::vector<int32_t> next = ids_of(a->train_batch(8).ids);
  auto resumed = counting_source(5000, 32, 0.05, 999);
  resumed->set_rng_state(state);
  EXPECT_EQ(ids_of(resumed->train_batch(8).ids), next);
}

TEST(StreamSource, ValidationIsTheLastFractionInOrder) {
  const int64_t length = 10;
  auto source = counting_source(1000, length, 0.2, 3);  // validation: tokens [800, 1000)
  std::vector<Batch> all = source->eval_batches(4, 0);
  // (200 − 1) / 10 = 19 windows: batches of 4, 4, 4, 4, 3.
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all.back().ids.size(0), 3);
  int32_t expected = 800;
  for (const Batch& b : all) {
    std::vector<int32_t> ids = ids_of(b.ids), targets = ids_of(b.targets);
    for (size_t i = 0; i < ids.size(); ++i, ++expected) {
      EXPECT_EQ(ids[i], expected);
      EXPECT_EQ(targets[i], expected + 1);
    }
  }
  EXPECT_EQ(source->eval_batches(4, 2).size(), 2u);
  EXPECT_EQ(ids_of(source->eval_batches(4, 2)[1].ids), ids_of(all[1].ids));
  // No validation part: evaluation reads the training data from the start.
  EXPECT_EQ(counting_source(100, 10, 0.0, 3)->eval_batches(2, 1)[0].ids.item(0), 0);
}

TEST(StreamSource, ErrorsNameTheFlags) {
  EXPECT_NE(expect_error([] { counting_source(100, 200, 0.05, 0); }).find("--seq-len"), std::string::npos);
  EXPECT_NE(expect_error([] { counting_source(1000, 60, 0.05, 0); }).find("--val-fraction"), std::string::npos);
  EXPECT_NE(expect_error([] { counting_source(1000, 10, 1.5, 0); }).find("--val-fraction"), std::string::npos);
  std::vector<int32_t> bad = {1, 2, 300};
  EXPECT_NE(expect_error([&] {
              make_stream_source(bad, 256, Metric::bits_per_byte, 1, {1, 0, 0}, "x");
            }).find("300"),
            std::string::npos);
}

TEST(TextSource, EncodesThroughTheCallbackAndMeasuresBytesPerToken) {
  TempDir dir;
  std::string text(400, 'a');
  for (size_t i = 0; i < text.size(); i += 3) text[i] = 'b';
  text[100] = text[101] = 'b';  // the pair "bb" is id 3
  std::string path = dir.write("t.txt", text);
  // A stand-in tokenizer: one token per pair of bytes.
  EncodeFn pairs = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 1 < s.size(); i += 2) ids.push_back((s[i] - 'a') * 2 + (s[i + 1] - 'a'));
    return ids;
  };
  auto source = make_text_source(path, pairs, 4, {8, 0.1, 0});
  EXPECT_DOUBLE_EQ(source->bytes_per_token(), 2.0);
  EXPECT_EQ(source->metric(), Metric::bits_per_token);
  EXPECT_EQ(source->train_batch(2).ids.shape(), (Shape{2, 8}));
  EXPECT_THROW(make_text_source(path, pairs, 3, {8, 0.1, 0}), Error);  // id 3 exists
}

TEST(SelectiveCopying, SequencesHaveExactlyTheDefinedStructure) {
  TaskOptions task{TaskKind::selective_copying, 32, 4, 8, 0};
  Rng rng(17);
  std::vector<int32_t> ids(36), targets(36);
  std::set<int64_t> positions_seen;
  std::set<int32_t> tokens_seen;
  for (int s = 0; s < 2000; ++s) {
    generate_task_sequence(task, rng, ids.data(), targets.data());
    std::vector<int32_t> data;
    for (int64_t t = 0; t < 32; ++t) {
      EXPECT_EQ(targets[size_t(t)], -1);
      if (ids[size_t(t)] == 0) continue;
      ASSERT_GE(ids[size_t(t)], 1);
      ASSERT_LE(ids[size_t(t)], 6);  // data tokens are 1…V−2: never noise, never the marker
      data.push_back(ids[size_t(t)]);
      positions_seen.insert(t);
      tokens_seen.insert(ids[size_t(t)]);
    }
    ASSERT_EQ(data.size(), 4u) << "sequence " << s;
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(ids[32 + i], 7);            // markers
      EXPECT_EQ(targets[32 + i], data[i]);  // the i-th marker predicts the i-th data token
    }
  }
  EXPECT_EQ(positions_seen.size(), 32u);
  EXPECT_EQ(tokens_seen.size(), 6u);
}

TEST(InductionHeads, TriggerAnswerAndLastPosition) {
  TaskOptions task{TaskKind::induction_heads, 20, 0, 6, 0};
  Rng rng(23);
  std::vector<int32_t> ids(20), targets(20);
  std::set<int64_t> trigger_positions;
  for (int s = 0; s < 2000; ++s) {
    generate_task_sequence(task, rng, ids.data(), targets.data());
    std::vector<int64_t> triggers;
    for (int64_t t = 0; t < 20; ++t) {
      if (ids[size_t(t)] == 0) {
        triggers.push_back(t);
      } else {
        ASSERT_LT(ids[size_t(t)], 6);
      }
      if (t < 19) {
        EXPECT_EQ(targets[size_t(t)], -1);
      }
    }
    ASSERT_EQ(triggers.size(), 2u) << "sequence " << s;
    int64_t p = triggers[0];
    EXPECT_LE(p, 17);  // p < L − 2
    EXPECT_EQ(triggers[1], 19);
    EXPECT_NE(ids[size_t(p + 1)], 0);
    EXPECT_EQ(targets[19], ids[size_t(p + 1)]);
    trigger_positions.insert(p);
  }
  EXPECT_EQ(trigger_positions.size(), 18u);  // every p in [0, L−3] occurs
}

TEST(TaskSource, FixedEvaluationSetIndependentOfSeed) {
  TaskOptions task{TaskKind::selective_copying, 64, 8, 16, 1};
  auto a = make_task_source(task);
  task.seed = 2;
  auto b = make_task_source(task);
  EXPECT_EQ(a->seq_len(), 72);
  EXPECT_EQ(a->metric(), Metric::accuracy);
  std::vector<Batch> eval_a = a->eval_batches(100, 0), eval_b = b->eval_batches(100, 0);
  ASSERT_EQ(eval_a.size(), 11u);  // 1024 sequences
  int64_t rows = 0;
  for (size_t i = 0; i < eval_a.size(); ++i) {
    rows += eval_a[i].ids.size(0);
    EXPECT_EQ(ids_of(eval_a[i].ids), ids_of(eval_b[i].ids));
  }
  EXPECT_EQ(rows, kTaskEvalSequences);
  EXPECT_NE(ids_of(a->train_batch(4).ids), ids_of(b->train_batch(4).ids));
  EXPECT_NE(ids_of(a->train_batch(4).ids), ids_of(eval_a[0].ids.slice(0, 4)));
  EXPECT_THROW(make_task_source({TaskKind::selective_copying, 8, 9, 16, 0}), Error);  // M > L
  EXPECT_THROW(make_task_source({TaskKind::selective_copying, 8, 2, 2, 0}), Error);   // vocab too small
  EXPECT_THROW(make_task_source({TaskKind::induction_heads, 2, 0, 16, 0}), Error);    // too short
  EXPECT_THROW(task_kind_from_name("copying", "--task"), Error);
}

TEST(FixedBatch, NextTokenTargetsAndVocabularyCheck) {
  Tensor input = Tensor::from_vector({5, 6, 7, 1, 2, 3}, {2, 3}, DType::i64);
  auto source = make_fixed_batch_source(input, 8, "batch.safetensors");
  Batch b = source->train_batch(2);
  EXPECT_EQ(ids_of(b.ids), (std::vector<int32_t>{5, 6, 7, 1, 2, 3}));
  EXPECT_EQ(ids_of(b.targets), (std::vector<int32_t>{6, 7, -1, 2, 3, -1}));
  EXPECT_THROW(source->train_batch(3), Error);
  std::string message = expect_error([&] { make_fixed_batch_source(input, 7, "batch.safetensors"); });
  EXPECT_NE(message.find("batch.safetensors"), std::string::npos) << message;
}

TEST(Accuracy, CountsOnlyScoredPositions) {
  Tensor predictions = Tensor::from_vector({1, 2, 3, 4}, {4}, DType::i32);
  Tensor targets = Tensor::from_vector({1, -1, 5, 4}, {2, 2}, DType::i32);
  AccuracyCount c = count_correct(predictions, targets);
  EXPECT_EQ(c.correct, 2);
  EXPECT_EQ(c.total, 3);
}

}  // namespace
}  // namespace mamba::train
