// Byte-level BPE read from a Hugging Face tokenizer.json (GPT-2 / GPT-NeoX style).
//
// encode(text):
//   1. Added tokens whose `normalized` is false are found in the raw text (leftmost, then longest
//      match; special ones are skipped when !parse_special) and become their ids unsplit.
//   2. Every other segment is normalized (NFC, NFD, NFKC or NFKD), then added tokens whose
//      `normalized` is true are found in it the same way.
//   3. Every remaining piece gets a leading space if `add_prefix_space`, is split by the GPT-2
//      pattern (pretokenizer.h), and each word's bytes start as one symbol each; the adjacent pair
//      with the lowest merge rank (leftmost among equals) is merged until no pair has a rank.
//      A word's result is cached.
// Tokens are stored as the bytes they stand for: the byte-level alphabet maps each byte to one
// printable character (33..126, 161..172, 174..255 to themselves, the other 68 bytes to U+0100
// onwards in order); a token string with a character outside that alphabet stands for its own
// UTF-8 bytes, as in the ByteLevel decoder of `tokenizers`.
// Not supported (mamba::Error naming the feature): other models than BPE, dropout, subword
// prefixes/suffixes, byte_fallback, added tokens with lstrip/rstrip/single_word, normalizers
// other than the four Unicode forms, pre-tokenizers other than ByteLevel with its regex,
// decoders other than ByteLevel. post_processor, truncation and padding are ignored: encode never
// adds special tokens (add_special_tokens=False) and never truncates.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace mamba::tokenizer {

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& tokenizer_json_path);

}  // namespace mamba::tokenizer
