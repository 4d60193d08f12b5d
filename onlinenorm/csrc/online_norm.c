/* Online Normalization forward and backward for float32 (N, C, M) activations,
 * with activation clamping or no ECM: onlinenorm/functional.py states the
 * equations; this file evaluates them in the order they are written.
 *
 * Each channel is one independent stream over the samples, carrying its state
 * in double precision. Each thread owns a block of channels and walks the
 * samples in order, and within a sample its channels, so it streams through
 * contiguous memory. A sample's row of M values is read from memory once per
 * direction: its statistics (or reductions) are taken, and the second look at
 * the row, to write the output, finds it in L1. That is one read and one write
 * of the activations forward and two reads and one write backward, with no
 * (N, C) scans at all: the recurrences are what this loop does anyway.
 *
 * The clamp mask is recomputed in backward from x with the same fmaf as the
 * forward, so both directions agree on every element. Without clamping the
 * caller passes clamp_value = +inf: nothing is outside, and the loops stay
 * free of branches. Per (sample, channel)
 * statistics are written out for the backward, as the other kernels do.
 *
 * Built at run time by onlinenorm/native.py (cc -O3 -march=native -fopenmp).
 */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

/* Clamped iff |y'| > c; NaN is not counted and passes its gradient, as in the eager kernels.
 * A bitwise |, not ||: the short-circuit branch stops gcc vectorising the loops (measured 3.7x slower). */
static inline int outside(float y, float c) { return (y > c) | (y < -c); }

/* This thread's block of channels [*first, *last). */
static void channel_block(int64_t channels, int64_t *first, int64_t *last)
{
    const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    *first = channels * id / threads;
    *last = channels * (id + 1) / threads;
}

void onlinenorm_forward(const float *x, float *out, int64_t n, int64_t channels, int64_t m,
                        const float *weight, const float *bias, const float *mu_in, const float *var_in,
                        float *mu_out, float *var_out, double alpha, double eps, float clamp_value,
                        float *mean_out, float *s2_out, float *mu_prev_out, float *invstd_out, float *scale_out,
                        float *shift_out, int64_t *count_out, int threads)
{
    double *state = malloc(2 * channels * sizeof(double)); /* mu, var */
    for (int64_t c = 0; c < channels; ++c) {
        state[2 * c] = mu_in[c];
        state[2 * c + 1] = var_in[c];
    }
    *count_out = 0;
#pragma omp parallel num_threads(threads)
    {
        int64_t first, last, count = 0;
        channel_block(channels, &first, &last);
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t c = first; c < last; ++c) {
                const int64_t at = t * channels + c;
                const float *row = x + at * m;
                float *dst = out + at * m;
                double *mu = state + 2 * c, *var = mu + 1;
                float sum = 0.0f, sum_sq = 0.0f; /* float lanes, as the eager and compiled kernels sum */
#pragma omp simd reduction(+ : sum, sum_sq)
                for (int64_t i = 0; i < m; ++i) {
                    sum += row[i];
                    sum_sq += row[i] * row[i];
                }
                const double gamma = weight ? weight[c] : 1.0, beta = bias ? bias[c] : 0.0;
                const double mean = (double)sum / m;
                const double s2 = fmax((double)sum_sq / m - mean * mean, 0.0);
                const double invstd = 1.0 / sqrt(*var + eps);
                const float scale = (float)(invstd * gamma), shift = (float)(beta - *mu * invstd * gamma);
                int32_t row_count = 0; /* m < 2^31 */
#pragma omp simd reduction(+ : row_count)
                for (int64_t i = 0; i < m; ++i) {
                    const float y = fmaf(row[i], scale, shift);
                    row_count += outside(y, clamp_value);
                    dst[i] = y > clamp_value ? clamp_value : (y < -clamp_value ? -clamp_value : y);
                }
                count += row_count;
                mean_out[at] = (float)mean;
                s2_out[at] = (float)s2;
                mu_prev_out[at] = (float)*mu;
                invstd_out[at] = (float)invstd;
                scale_out[at] = scale;
                shift_out[at] = shift;
                const double dev = mean - *mu;
                *var = alpha * *var + (1.0 - alpha) * s2 + alpha * (1.0 - alpha) * dev * dev;
                *mu = alpha * *mu + (1.0 - alpha) * mean;
            }
        }
#pragma omp atomic
        *count_out += count;
    }
    for (int64_t c = 0; c < channels; ++c) {
        mu_out[c] = (float)state[2 * c];
        var_out[c] = (float)state[2 * c + 1];
    }
    free(state);
}

void onlinenorm_backward(const float *grad, const float *x, float *grad_x, int64_t n, int64_t channels, int64_t m,
                         const float *weight, const float *mean_in, const float *s2_in, const float *mu_prev_in,
                         const float *invstd_in, const float *scale_in, const float *shift_in,
                         const float *u_in, const float *v_in, float *u_out, float *v_out, double alpha,
                         float clamp_value, float *sum_grad_y_out, float *sum_grad_out, int threads)
{
    const double leak = 1.0 - alpha;
    double *state = malloc(2 * channels * sizeof(double)); /* u, v */
    for (int64_t c = 0; c < channels; ++c) {
        state[2 * c] = u_in[c];
        state[2 * c + 1] = v_in[c];
    }
#pragma omp parallel num_threads(threads)
    {
        int64_t first, last;
        channel_block(channels, &first, &last);
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t c = first; c < last; ++c) {
                const int64_t at = t * channels + c;
                const float *g = grad + at * m, *row = x + at * m;
                float *dst = grad_x + at * m;
                double *u = state + 2 * c, *v = u + 1;
                const float scale = scale_in[at], shift = shift_in[at], mu_prev = mu_prev_in[at];
                const double invstd = invstd_in[at], gamma = weight ? weight[c] : 1.0;
                /* g' (the gradient at y', zero where clamped): sum(g') and sum(g' (x - mu_prev)).
                 * float lanes: with the mask, double accumulators measured 4x slower (gcc 12). */
                float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
                for (int64_t i = 0; i < m; ++i) {
                    const float gi = outside(fmaf(row[i], scale, shift), clamp_value) ? 0.0f : g[i];
                    sum_g += gi;
                    sum_gx += gi * (row[i] - mu_prev);
                }
                const double sum_gy = sum_gx * invstd;
                const double dev = mean_in[at] - mu_prev;
                const double mean_y_sq = (s2_in[at] + dev * dev) * invstd * invstd;
                const double v_prev = *v, u_prev = *u;
                /* v_t = (1 - leak mean(y^2)) v_{t-1} + mean(g y);  u_t = a_b u_{t-1} + mean(h_t), g = gamma g' */
                *v = (1.0 - leak * mean_y_sq) * v_prev + gamma * sum_gy / m;
                *u = alpha * u_prev + (gamma * sum_g / m - leak * v_prev * dev * invstd) * invstd;
                /* dx = (gamma g' - leak v_prev y) invstd - leak u_prev, y = (x - mu_prev) invstd */
                const float grad_coef = (float)(gamma * invstd);
                const float x_coef = (float)(-leak * v_prev * invstd * invstd);
                const float constant = (float)(leak * v_prev * invstd * invstd * mu_prev - leak * u_prev);
#pragma omp simd
                for (int64_t i = 0; i < m; ++i) {
                    const float gi = outside(fmaf(row[i], scale, shift), clamp_value) ? 0.0f : g[i];
                    dst[i] = fmaf(gi, grad_coef, fmaf(row[i], x_coef, constant));
                }
                sum_grad_y_out[at] = (float)sum_gy;
                sum_grad_out[at] = (float)sum_g;
            }
        }
    }
    for (int64_t c = 0; c < channels; ++c) {
        u_out[c] = (float)state[2 * c];
        v_out[c] = (float)state[2 * c + 1];
    }
    free(state);
}
