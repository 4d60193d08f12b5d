/* Online Normalization forward and backward for float32 (N, C, M) activations,
 * with any ECM: onlinenorm/functional.py states the equations and the forms
 * evaluated here (layer scaling folds into per-row coefficients, as there).
 *
 * The structure, in one call per direction: (1) a reduction over each (sample, channel) row of M values, in
 * parallel over rows; (2) the recurrences over the batch as scans of those
 * (N, C) numbers, in parallel over channels, carrying the state in double
 * precision (scalar work per sample and channel, nothing next to a pass over
 * the activations); (3) an elementwise pass over the rows, in parallel.
 *
 * The batch is processed in blocks (samples, or one sample's channels) sized
 * so that each thread's share of a block (BLOCK_FLOATS activations) is still
 * in its cache when (3) reads it again after (1): the scans carry their state
 * from block to block, so this changes the order of work, not the result,
 * and each direction reads the activations from memory about once. One
 * OpenMP region holds all the blocks, with a barrier after (1) and after (2);
 * those barriers also order the state between the threads that update it.
 * Layer scaling couples a sample's channels (its scale is the RMS over all of
 * them), so it adds a per-sample step and keeps each sample's channels in one
 * block.
 *
 * The clamp mask is recomputed in backward from x with the same fmaf as the
 * forward, so both directions agree on every element, and only in the rows
 * where the forward clamped something (it leaves a flag per row); the other
 * rows run the loops without clamping. The masked loops read g[i] whatever
 * the mask says, which keeps the reductions' accumulators in registers
 * (BENCHMARKS.md, "Implementation notes").
 * Without clamping the caller passes no flags, and no loop looks at the clamp.
 * The clamp telemetry goes straight into the layer's int64 counters (the number clamped, and seen), so a
 * step spends no tensor operation on it (two in-place adds in Python would cost about 5 us a step).
 * Likewise the state (mu, var; u, v) is advanced in place, and the backward returns the weight and bias
 * gradients summed over the batch (from its scan), not per-(sample, channel) sums for torch to add up:
 * each tensor operation around the kernels costs a few microseconds, more just after a kernel has
 * filled the caches with activations (BENCHMARKS.md, "Passes over the activations").
 *
 * Built at run time by onlinenorm/kernels/native.py (cc -O3 -march=native -fopenmp), or ahead of time for
 * any CPU of the architecture (-march=x86-64-v3 on x86-64, -march=armv8-a on aarch64:
 * `onlinenorm kernels build --portable`, the Docker image).
 */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK_FLOATS (1 << 17) /* 512 KiB of float32 per thread and tensor */

/* Clamped iff |y'| > c; NaN is not counted and passes its gradient, as in the eager kernels.
 * One compare of the absolute value, which vectorises to the fewest instructions (BENCHMARKS.md,
 * "Implementation notes"). */
static inline int outside(float y, float c) { return fabsf(y) > c; }

/* For one row of the backward: sum(g') and sum(g' (x - mu_prev)), g' = g where the forward did not clamp,
 * else 0. With masked a constant 0 or 1 each call site compiles to its own loop, branch-free; g[i] is read
 * unconditionally (see the top of the file). */
static inline __attribute__((always_inline)) void row_grad_sums(const float *g, const float *xr, int64_t m,
    float scale, float shift, float mu_prev, float clamp_value, int masked, float *sum_g_out, float *sum_gx_out)
{
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t i = 0; i < m; ++i) {
        const float gv = g[i];
        const float gi = (masked & outside(fmaf(xr[i], scale, shift), clamp_value)) ? 0.0f : gv;
        sum_g += gi;
        sum_gx += gi * (xr[i] - mu_prev);
    }
    *sum_g_out = sum_g;
    *sum_gx_out = sum_gx;
}

/* For one row of the backward: dx = a g' + b x + k, g' as in row_grad_sums. */
static inline __attribute__((always_inline)) void row_grad_x(const float *g, const float *xr, float *dst, int64_t m,
    float scale, float shift, float clamp_value, int masked, float a, float b, float k)
{
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
        const float gv = g[i];
        const float gi = (masked & outside(fmaf(xr[i], scale, shift), clamp_value)) ? 0.0f : gv;
        dst[i] = fmaf(gi, a, fmaf(xr[i], b, k));
    }
}

/* This thread's share [*first, *last) of the items [begin, end). */
static void share(int64_t begin, int64_t end, int64_t *first, int64_t *last)
{
    const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    *first = begin + (end - begin) * id / threads;
    *last = begin + (end - begin) * (id + 1) / threads;
}

/* The carried state of this thread's share of the channels: in as double, and out as float. */
static void load_state(const float *a_in, const float *b_in, double *a, double *b, int64_t channels)
{
    int64_t first, last;
    share(0, channels, &first, &last);
    for (int64_t c = first; c < last; ++c) {
        a[c] = a_in[c];
        b[c] = b_in[c];
    }
}

static void store_state(const double *a, const double *b, float *a_out, float *b_out, int64_t channels)
{
    int64_t first, last;
    share(0, channels, &first, &last);
    for (int64_t c = first; c < last; ++c) {
        a_out[c] = (float)a[c];
        b_out[c] = (float)b[c];
    }
}

/* The block that starts at sample t0 and channel c0: where it ends (*t1, *c1), and this thread's
 * share [*first, *last) of its rows, which are contiguous (see block_shape). */
static void block_rows(int64_t t0, int64_t c0, int64_t block, int64_t group, int64_t n, int64_t channels,
                       int64_t *t1, int64_t *c1, int64_t *first, int64_t *last)
{
    *t1 = t0 + block < n ? t0 + block : n;
    *c1 = c0 + group < channels ? c0 + group : channels;
    share(t0 * channels + c0, (*t1 - 1) * channels + *c1, first, last);
}

/* A block is `*samples` samples of all channels or, where one sample is larger than the budget,
 * one sample of `*group` channels: either way its rows are contiguous, and the channels' scans
 * are independent, so a block of channels can run ahead of the others. */
static void block_shape(int64_t channels, int64_t m, int tensors, int threads, int whole_samples,
                        int64_t *samples, int64_t *group)
{
    const int64_t budget = (int64_t)threads * BLOCK_FLOATS / tensors; /* floats per tensor and block */
    *samples = budget / (channels * m) > 0 ? budget / (channels * m) : 1;
    *group = whole_samples || channels * m <= budget ? channels : (budget / m > 0 ? budget / m : 1);
}

void onlinenorm_forward(const float *x, float *out, int64_t n, int64_t channels, int64_t m,
                        const float *weight, const float *bias, float *mu_state, float *var_state,
                        double alpha, double eps, float clamp_value,
                        int layer_scaling, double ls_eps, float *mean_out, float *s2_out, float *mu_prev_out,
                        float *invstd_out, float *scale_out, float *shift_out, float *ls_scale_out,
                        uint8_t *clamped_out, int64_t *clamped_total, int64_t *seen_total, int threads)
{
    int64_t block, group;
    block_shape(channels, m, 1, threads, layer_scaling, &block, &group);
    double *state = malloc(2 * channels * sizeof(double)); /* mu, var */
    if (seen_total)
        *seen_total += n * channels * m;
#pragma omp parallel num_threads(threads)
    {
        int64_t c_first, c_last, count = 0;
        double *mu = state, *var = state + channels;
        load_state(mu_state, var_state, mu, var, channels);
        for (int64_t t0 = 0; t0 < n; t0 += block)
        for (int64_t c0 = 0; c0 < channels; c0 += group) {
            int64_t t1, c1, first, last;
            block_rows(t0, c0, block, group, n, channels, &t1, &c1, &first, &last);
            /* (1) per-row mean and biased variance: float lanes, as the eager and compiled kernels sum */
            for (int64_t row = first; row < last; ++row) {
                const float *xr = x + row * m;
                float sum = 0.0f, sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum, sum_sq)
                for (int64_t i = 0; i < m; ++i) {
                    sum += xr[i];
                    sum_sq += xr[i] * xr[i];
                }
                const double mean = (double)sum / m;
                mean_out[row] = (float)mean;
                s2_out[row] = (float)fmax((double)sum_sq / m - mean * mean, 0.0);
            }
#pragma omp barrier
            /* (2) mu_t, var_t: samples in order, this thread's channels side by side (vectorised);
             * each sample's scale and shift come from the state before it */
            share(c0, c1, &c_first, &c_last);
            for (int64_t t = t0; t < t1; ++t) {
#pragma omp simd
                for (int64_t c = c_first; c < c_last; ++c) {
                    const int64_t at = t * channels + c;
                    const double gamma = weight ? weight[c] : 1.0, beta = bias ? bias[c] : 0.0;
                    const double invstd = 1.0 / sqrt(var[c] + eps), mean = mean_out[at], dev = mean - mu[c];
                    mu_prev_out[at] = (float)mu[c];
                    invstd_out[at] = (float)invstd;
                    scale_out[at] = (float)(invstd * gamma);
                    shift_out[at] = (float)(beta - mu[c] * invstd * gamma);
                    var[c] = alpha * var[c] + (1.0 - alpha) * s2_out[at] + alpha * (1.0 - alpha) * dev * dev;
                    mu[c] = alpha * mu[c] + (1.0 - alpha) * mean;
                }
            }
#pragma omp barrier
            if (layer_scaling) {
                /* (2b) r_t = 1 / sqrt(mean of y'^2 over (C, M) + ls_eps); per channel the mean over M of y'^2
                 * is scale^2 s2 + (scale (m - mu_prev) + beta)^2, so this needs no pass */
                int64_t t_first, t_last;
                share(t0, t1, &t_first, &t_last);
                for (int64_t t = t_first; t < t_last; ++t) {
                    double sum = 0.0;
                    for (int64_t c = 0; c < channels; ++c) {
                        const int64_t at = t * channels + c;
                        const double scale = scale_out[at], beta = bias ? bias[c] : 0.0;
                        const double mean_y = scale * ((double)mean_out[at] - mu_prev_out[at]) + beta;
                        sum += scale * scale * s2_out[at] + mean_y * mean_y;
                    }
                    ls_scale_out[t] = (float)(1.0 / sqrt(sum / channels + ls_eps));
                }
#pragma omp barrier
            }
            /* (3) z = r (scale x + shift) (r = 1 without layer scaling); with clamping (flags wanted),
             * clamped, counted and each row flagged if it has anything clamped */
            for (int64_t row = first; row < last; ++row) {
                const float *xr = x + row * m;
                float *dst = out + row * m;
                const float r = layer_scaling ? ls_scale_out[row / channels] : 1.0f;
                const float scale = scale_out[row] * r, shift = shift_out[row] * r;
                if (!clamped_out) {
#pragma omp simd
                    for (int64_t i = 0; i < m; ++i)
                        dst[i] = fmaf(xr[i], scale, shift);
                    continue;
                }
                int32_t row_count = 0; /* m < 2^31 */
#pragma omp simd reduction(+ : row_count)
                for (int64_t i = 0; i < m; ++i) {
                    const float y = fmaf(xr[i], scale, shift);
                    row_count += outside(y, clamp_value);
                    /* two ternaries, each a single max or min (NaN kept) */
                    const float floor = y < -clamp_value ? -clamp_value : y;
                    dst[i] = floor > clamp_value ? clamp_value : floor;
                }
                clamped_out[row] = row_count > 0;
                count += row_count;
            }
        }
        store_state(mu, var, mu_state, var_state, channels);
        if (clamped_total) {
#pragma omp atomic
            *clamped_total += count;
        }
    }
    free(state);
}

void onlinenorm_backward(const float *grad, const float *x, float *grad_x, int64_t n, int64_t channels, int64_t m,
                         const float *weight, const float *bias, const float *mean_in, const float *s2_in,
                         const float *mu_prev_in, const float *invstd_in, const float *scale_in,
                         const float *shift_in, const float *ls_scale_in, const uint8_t *clamped_in,
                         float *u_state, float *v_state, double alpha, float clamp_value,
                         float *grad_weight_out, float *grad_bias_out, int threads)
{
    const double leak = 1.0 - alpha;
    const int layer_scaling = ls_scale_in != NULL;
    int64_t block, group;
    block_shape(channels, m, 2, threads, layer_scaling, &block, &group); /* two tensors read: grad and x */
    /* per sample, with layer scaling: r^3 K, K = mean over (C, M) of g y' (g the gradient at z = r y') */
    double *r3k = layer_scaling ? malloc(n * sizeof(double)) : NULL;
    /* per row: sum(g' y) and sum(g'), g' the gradient at y'; the output pass's coefficients,
     * dx = grad_coef g' + x_coef x + constant */
    float *row_sum_grad_y = malloc(5 * n * channels * sizeof(float));
    float *row_sum_grad = row_sum_grad_y + n * channels, *grad_coef = row_sum_grad + n * channels;
    float *x_coef = grad_coef + n * channels, *constant = x_coef + n * channels;
    /* per channel: u, v, and the weight and bias gradients, the sums over samples of sum(g' y) and sum(g') */
    double *state = calloc(4 * channels, sizeof(double));
#pragma omp parallel num_threads(threads)
    {
        int64_t c_first, c_last;
        double *u = state, *v = state + channels, *grad_weight = v + channels, *grad_bias = grad_weight + channels;
        load_state(u_state, v_state, u, v, channels);
        for (int64_t t0 = 0; t0 < n; t0 += block)
        for (int64_t c0 = 0; c0 < channels; c0 += group) {
            int64_t t1, c1, first, last;
            block_rows(t0, c0, block, group, n, channels, &t1, &c1, &first, &last);
            /* (1) per row, g' (the gradient at y', zero where clamped): sum(g') and sum(g' y).
             * float lanes: with the mask, double accumulators run 4x slower (measured with gcc 12). */
            for (int64_t row = first; row < last; ++row) {
                const float *g = grad + row * m, *xr = x + row * m;
                const float scale = scale_in[row], shift = shift_in[row], mu_prev = mu_prev_in[row];
                float sum_g, sum_gx;
                if (clamped_in && clamped_in[row])
                    row_grad_sums(g, xr, m, scale, shift, mu_prev, clamp_value, 1, &sum_g, &sum_gx);
                else
                    row_grad_sums(g, xr, m, scale, shift, mu_prev, clamp_value, 0, &sum_g, &sum_gx);
                row_sum_grad[row] = sum_g;
                row_sum_grad_y[row] = (float)(sum_gx * (double)invstd_in[row]);
            }
#pragma omp barrier
            if (layer_scaling) {
                /* (1b) dL/dy' = r g - r^3 y' K: the gradient at y' is r g + y_coef y + const_coef per row, with
                 * y_coef = -r^3 K gamma and const_coef = -r^3 K beta; its sums over the row follow from g's */
                int64_t t_first, t_last;
                share(t0, t1, &t_first, &t_last);
                for (int64_t t = t_first; t < t_last; ++t) {
                    double sum = 0.0;
                    for (int64_t c = 0; c < channels; ++c) {
                        const int64_t at = t * channels + c;
                        const double gamma = weight ? weight[c] : 1.0, beta = bias ? bias[c] : 0.0;
                        sum += gamma * row_sum_grad_y[at] + beta * row_sum_grad[at];
                    }
                    const double r = ls_scale_in[t];
                    r3k[t] = r * r * r * sum / (channels * m);
                    for (int64_t c = 0; c < channels; ++c) {
                        const int64_t at = t * channels + c;
                        const double gamma = weight ? weight[c] : 1.0, beta = bias ? bias[c] : 0.0;
                        const double y_coef = -r3k[t] * gamma, const_coef = -r3k[t] * beta;
                        const double invstd = invstd_in[at], dev = (double)mean_in[at] - mu_prev_in[at];
                        const double sum_y = m * dev * invstd, sum_y_sq = m * (s2_in[at] + dev * dev) * invstd * invstd;
                        const double sum_gy = row_sum_grad_y[at], sum_g = row_sum_grad[at];
                        row_sum_grad_y[at] = (float)(r * sum_gy + y_coef * sum_y_sq + const_coef * sum_y);
                        row_sum_grad[at] = (float)(r * sum_g + y_coef * sum_y + const_coef * m);
                    }
                }
#pragma omp barrier
            }
            /* (2) v_t = (1 - leak mean(y^2)) v_{t-1} + mean(g y);  u_t = a_b u_{t-1} + mean(h_t), g = gamma g':
             * samples in order, this thread's channels side by side; dx's coefficients from the state before
             * each sample, dx = (gamma g' - leak v_prev y) invstd - leak u_prev with y = (x - mu_prev) invstd */
            share(c0, c1, &c_first, &c_last);
            for (int64_t t = t0; t < t1; ++t) {
#pragma omp simd
                for (int64_t c = c_first; c < c_last; ++c) {
                    const int64_t at = t * channels + c;
                    const double gamma = weight ? weight[c] : 1.0;
                    const double invstd = invstd_in[at], mu_prev = mu_prev_in[at], dev = mean_in[at] - mu_prev;
                    const double mean_y_sq = (s2_in[at] + dev * dev) * invstd * invstd;
                    /* with layer scaling the gradient at y' adds y_coef y + const_coef (see (1b)) */
                    const double r = layer_scaling ? ls_scale_in[t] : 1.0, k = layer_scaling ? r3k[t] : 0.0;
                    const double beta = bias ? bias[c] : 0.0;
                    const double slope = (-gamma * k * gamma - leak * v[c]) * invstd * invstd;
                    grad_coef[at] = (float)(gamma * r * invstd);
                    x_coef[at] = (float)slope;
                    constant[at] = (float)(-slope * mu_prev - gamma * k * beta * invstd - leak * u[c]);
                    u[c] = alpha * u[c] + (gamma * row_sum_grad[at] / m - leak * v[c] * dev * invstd) * invstd;
                    v[c] = (1.0 - leak * mean_y_sq) * v[c] + gamma * row_sum_grad_y[at] / m;
                    grad_weight[c] += row_sum_grad_y[at];
                    grad_bias[c] += row_sum_grad[at];
                }
            }
#pragma omp barrier
            /* (3) dx */
            for (int64_t row = first; row < last; ++row) {
                const float *g = grad + row * m, *xr = x + row * m;
                float *dst = grad_x + row * m;
                const float scale = scale_in[row], shift = shift_in[row];
                const float a = grad_coef[row], b = x_coef[row], k = constant[row];
                if (clamped_in && clamped_in[row])
                    row_grad_x(g, xr, dst, m, scale, shift, clamp_value, 1, a, b, k);
                else
                    row_grad_x(g, xr, dst, m, scale, shift, clamp_value, 0, a, b, k);
            }
        }
        store_state(u, v, u_state, v_state, channels);
        store_state(grad_weight, grad_bias, grad_weight_out, grad_bias_out, channels);
    }
    free(row_sum_grad_y);
    free(state);
    free(r3k);
}
