// Link stubs for building ik_llama.cpp's examples/gbnf-validator from its grammar sources
// alone (src/llama-grammar.cpp, src/unicode*.cpp) without libllama and ggml: the
// validator's path (parse a grammar, accept code points) never reaches the vocabulary,
// so those entry points abort if called; logging goes to stderr.
#include "llama-vocab.h"
#include "llama-grammar.h"
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

extern "C" void ggml_abort(const char * file, int line, const char * fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, args);
    va_end(args);
    abort();
}

extern "C" int64_t ggml_time_us(void) {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

void llama_log_internal(ggml_log_level, const char * format, ...) {
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
}

void llama_grammar_free(struct llama_grammar * grammar) { llama_grammar_free_impl(grammar); }

static void unreachable_vocab() {
    fprintf(stderr, "gbnf-validator stub: the vocabulary is not linked\n");
    abort();
}

bool llama_token_is_eog(const llama_vocab *, llama_token) { unreachable_vocab(); return false; }
bool llama_vocab::is_eog(llama_token) const { unreachable_vocab(); return false; }
const std::string & llama_vocab::token_to_piece(llama_token) const {
    unreachable_vocab();
    static std::string none;
    return none;
}
int32_t llama_vocab::tokenize(const char *, int32_t, llama_token *, int32_t, bool, bool) const {
    unreachable_vocab();
    return 0;
}
