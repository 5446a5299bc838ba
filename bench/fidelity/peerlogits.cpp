// peerlogits: a small driver of a llama.cpp-family engine's own C API, used only to record
// oracle fixtures (bench/fidelity/record.sh). It feeds token ids (no tokenizer involved),
// decodes greedily (first index of the largest logit, as llama.cpp's greedy sampler does)
// and writes the full logits of every step, so onebit can be held to the engine's numbers.
//
//   peerlogits MODEL STEPS IDS OUT [THREADS]
//     IDS   comma-separated prompt token ids
//     OUT   OUT.logits: (STEPS + 1) rows of n_vocab little-endian f32 (row 0 after the
//           prompt); stdout: "tokens: ..." and, per step, the top-2 ids and logits
//
// Built against an engine's headers and library, one define per API generation:
//   -DPEER_UPSTREAM (llama.cpp 2025), -DPEER_IK (ik_llama.cpp), -DPEER_BITNET (bitnet.cpp's
//   2024 fork). It is not part of onebit and is never built in CI.
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static llama_batch one_batch(std::vector<llama_token> & t, int pos) {
#if defined(PEER_UPSTREAM)
    (void) pos;
    return llama_batch_get_one(t.data(), (int32_t) t.size());
#else
    return llama_batch_get_one(t.data(), (int32_t) t.size(), pos, 0);
#endif
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL STEPS IDS OUT [THREADS]\n", argv[0]);
        return 2;
    }
    const int steps = atoi(argv[2]);
    const int threads = argc > 5 ? atoi(argv[5]) : 1;
    std::vector<llama_token> prompt;
    for (char * p = strtok(argv[3], ","); p; p = strtok(nullptr, ",")) prompt.push_back(atoi(p));
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (prompt.size() + steps + 8);
    cp.n_batch = cp.n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
#if defined(PEER_BITNET)
    llama_model * model = llama_load_model_from_file(argv[1], mp);
    llama_context * ctx = model ? llama_new_context_with_model(model, cp) : nullptr;
#else
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    llama_context * ctx = model ? llama_init_from_model(model, cp) : nullptr;
#endif
    if (!ctx) {
        fprintf(stderr, "peerlogits: cannot load %s\n", argv[1]);
        return 1;
    }
#if defined(PEER_UPSTREAM)
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
#else
    const int n_vocab = llama_n_vocab(model);
#endif
    FILE * out = fopen((std::string(argv[4]) + ".logits").c_str(), "wb");
    std::vector<llama_token> batch = prompt, got;
    int pos = 0;
    for (int s = 0; s <= steps; ++s) {
        if (llama_decode(ctx, one_batch(batch, pos))) {
            fprintf(stderr, "peerlogits: decode failed at step %d\n", s);
            return 1;
        }
        pos += (int) batch.size();
        const float * l = llama_get_logits_ith(ctx, -1);
        fwrite(l, sizeof(float), n_vocab, out);
        int a = 0, b = -1;
        for (int i = 1; i < n_vocab; ++i) if (l[i] > l[a]) a = i;
        for (int i = 0; i < n_vocab; ++i) if (i != a && (b < 0 || l[i] > l[b])) b = i;
        printf("step %d top2 %d %.6f %d %.6f\n", s, a, l[a], b, l[b]);
        if (s == steps) break;
        got.push_back(a);
        batch.assign(1, a);
    }
    fclose(out);
    printf("tokens:");
    for (llama_token t : got) printf(" %d", t);
    printf("\n");
    llama_free(ctx);
    llama_free_model(model);
    return 0;
}
