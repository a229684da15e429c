// The ByteLevel pre-tokenizer's split: GPT-2's pattern
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// matched by hand over code points, with the semantics of a backtracking regex engine (at each
// position the first alternative that matches wins; runs are greedy). \p{L} is any letter
// category, \p{N} any number category, \s is White_Space; ' ' is U+0020 only. The contractions
// are case-sensitive. In effect, a run of whitespace followed by more text gives up its last
// character, so that a single space can join the word after it. Every character of the input
// belongs to exactly one piece, so concatenating the pieces gives the input back.
#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

namespace mamba::tokenizer {

// Appends the pieces of `text` (well-formed UTF-8) to `pieces`, in order. Texts longer than
// `part_bytes` are split in parts at newlines where that cannot change the pieces, to bound the
// working memory (a parameter only so that tests can check that claim).
void split_gpt2(std::string_view text, std::vector<std::string_view>& pieces, size_t part_bytes = size_t(1) << 16);

}  // namespace mamba::tokenizer
