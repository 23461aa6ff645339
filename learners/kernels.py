"""Fused per-event kernels of `learners.sparse.SparseRecommender` (numba, compiled once and cached).

One pass per event does what the model's signals need, with the state before the event: gather the
candidates (neighbours of the user's recent items, content neighbours, the trending set, fresh items),
score them by the blend, write them out for the evaluator, take one online step of the blend weights,
then learn the event (neighbour pairs, counts, the trending set, the user's recent items). No step
touches every item: the cost is context x row width per event.

Feature order of the blend (`FEATURES`): co-occurrence (asymmetric cosine: context count ** -alpha,
candidate count ** (alpha - 1)), trending, popularity, content, co-occurrence share (each context item's
pair weights over its count: no candidate normalisation). How their summed weight splits between the two
is chosen online among a few mixes, by the metric (see `MIX_EVENTS`).
"""

from __future__ import annotations

import numba
import numpy as np

from learners.neighbours import add_pair, insert_ranked

FEATURES = ("cooccurrence", "trending", "popularity", "content", "cooccurrence_share")
# the `source` a recommendation names for each feature (both co-occurrence normalisations: "cooccurrence")
FEATURE_SOURCES = ("cooccurrence", "trending", "popularity", "content", "cooccurrence")
N_FEATURES = len(FEATURES)

# params (float64 array) layout
(P_CONTEXT, P_WINDOW, P_ALPHA, P_BOOST, P_LR, P_MOMENTUM, P_NEGATIVES, P_HALF_LIFE, P_REF, P_CLOCK,
 P_ERR, P_SCALE_WARMUP, P_MIX, P_FIRST_W, P_FIRST_GAIN, P_FADE, P_FIRST_K, P_FIRST_CUT) = range(18)
N_PARAMS = 18
# The split of the two co-occurrence features' weight is chosen online among `mixes` by the metric
# itself: per mix, a moving average (over MIX_EVENTS scored events) of whether the event's item would
# have ranked in the top MIX_K of its candidates; the serving mix moves to another one only when that
# one leads by MIX_MARGIN. (The pairwise step does not learn the split: its negatives are mostly not
# candidates, where both features are 0; negatives drawn from the candidates made it worse.)
MIX_EVENTS = 2000.0
MIX_EVERY = 4  # the tally runs on every 4th such event (its cost is mixes x candidates)
MIX_K = 10
MIX_MARGIN = 0.002
# A user's first event has no context: its co-occurrence candidates come from the first-picks row (what
# users picked first; its weights sum to params[P_FIRST_W]), scored as a context item of that count. How
# much that row weighs against the item-only parts is chosen like the mixes, among `first_tally[0]`'s
# gains, by whether each first event's item would have ranked in the top MIX_K of its candidates
# (first events are few: a faster average). A first event takes the row's P_FIRST_K strongest entries
# (lower bound >= params[P_FIRST_CUT], kept up to date as the row changes); the row stays wider for its
# counts. Logs differ: first picks are telling where users start from a shared page (MovieLens' sign-up),
# not where they start from a search.
FIRST_RATE = 0.01
FIRST_MARGIN = 0.01


@numba.njit(cache=True, nogil=True, inline="always")
def effective_weights(weights, scales, mixes, params, eff):
    """The blend's weights on raw features: weights / scales, with the two co-occurrence features'
    summed weight split by the serving mix, mixes[params[P_MIX]] (its share on the asymmetric cosine;
    P_MIX < 0: the split as learned)."""
    for f in range(N_FEATURES):
        eff[f] = weights[f] / scales[f]
    serving = int(params[P_MIX])
    if serving >= 0:
        mix = mixes[serving]
        total = weights[0] + weights[4]
        eff[0] = mix * total / scales[0]
        eff[4] = (1.0 - mix) * total / scales[4]


@numba.njit(cache=True, nogil=True, inline="always")
def _next_random(rng: np.ndarray) -> np.uint64:
    """xorshift64*: the model's own generator, so runs are reproducible whatever else uses numba."""
    x = rng[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[0] = x
    return x * np.uint64(2685821657736338717)


@numba.njit(cache=True, nogil=True, inline="always")
def _touch(j, stamp, cur, s_cooc, s_cont, touched, n):
    """Make j a candidate of this event (sums from zero) unless it already is; returns the new count."""
    if stamp[j] == cur:
        return n
    stamp[j] = cur
    s_cooc[j, 0] = 0.0
    s_cooc[j, 1] = 0.0
    s_cont[j] = 0.0
    touched[n] = j
    return n + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _gather_row(row_cols, row_w, row_err, c, wc, ws, err_share, stamp, cur, s_cooc, s_cont, touched, n, cut):
    """Row c's neighbours whose weight lower bound is at least `cut` as candidates, adding wc / ws times
    that bound to the two co-occurrence sums; returns the new count."""
    for s in range(row_cols.shape[1]):
        j = row_cols[c, s]
        lower = row_w[c, s] - err_share * row_err[c, s]
        if j < 0 or lower < cut:
            continue
        # branch-free first touch (whether j is new this event is unpredictable): stale sums
        # are multiplied by 0, j is appended and the count moves only when new
        new = stamp[j] != cur
        keep = 0.0 if new else 1.0
        stamp[j] = cur
        touched[n] = j
        n += new
        s_cooc[j, 0] = s_cooc[j, 0] * keep + wc * lower
        s_cooc[j, 1] = s_cooc[j, 1] * keep + ws * lower
        s_cont[j] *= keep
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def is_first(u, user_events, first_tally):
    """Does user column u (u < 0: unknown) score from the first-picks row? (No gains: the row is off.)"""
    return first_tally.shape[1] > 0 and (u < 0 or user_events[u] == 0)


@numba.njit(cache=True, nogil=True)
def gather_candidates(u, recent, recent_head, recent_len, ctx_norm, nb_cols, nb_w, nb_err, cn_cols, cn_w,
                      top_cols, fresh, n_fresh, decay_pow, context, alpha, stamp, cur, s_cooc, s_cont,
                      touched, err_share, first, fp_cols, fp_w, fp_err, fp_total, first_cut):
    """Candidates of user column `u` (u < 0: no context) into `touched`; their co-occurrence and content
    sums into s_cooc / s_cont (valid where stamp == cur). A `first` event's context is the first-picks
    row (fp_*, row 0, weights summing to fp_total; its entries of lower bound >= first_cut). Returns the
    number of candidates."""
    n = 0
    if first and fp_total > 0:
        count = max(fp_total, 1.0)
        n = _gather_row(fp_cols, fp_w, fp_err, 0, count ** -alpha, 1.0 / count, err_share, stamp, cur, s_cooc,
                        s_cont, touched, n, first_cut)
    elif u >= 0:
        length = min(recent_len[u], context)
        width = recent.shape[1]
        total = 0.0
        for k in range(length):
            total += decay_pow[k]
        for k in range(length):
            c = recent[u, (recent_head[u] - 1 - k) % width]
            if c < 0:
                continue
            base = decay_pow[k] / total
            wc = base * ctx_norm[c]
            ws = base * ctx_norm[c] ** (1.0 / alpha)  # 1 / count: SparseRecommender refuses alpha <= 0
            n = _gather_row(nb_cols, nb_w, nb_err, c, wc, ws, err_share, stamp, cur, s_cooc, s_cont, touched,
                            n, -np.inf)
            for s in range(cn_cols.shape[1] if c < cn_cols.shape[0] else 0):
                j = cn_cols[c, s]
                if j < 0:
                    continue
                n = _touch(j, stamp, cur, s_cooc, s_cont, touched, n)
                s_cont[j] += base * cn_w[c, s]
    for s in range(top_cols.shape[0]):
        j = top_cols[s]
        if j >= 0:
            n = _touch(j, stamp, cur, s_cooc, s_cont, touched, n)
    for s in range(min(n_fresh, fresh.shape[0])):
        j = fresh[s]
        if j >= 0:
            n = _touch(j, stamp, cur, s_cooc, s_cont, touched, n)
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _features(j, s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade, trend_shift, boost_shift,
              out):
    """Raw features of item j: the log counts are logs floored at 0 (a count below one event adds
    nothing), from per-item logs kept up to date as items are learned, and the content fade from its
    cache, so no transcendental runs per candidate."""
    inside = stamp[j] == cur
    out[0] = s_cooc[j, 0] * cand_norm[j] if inside else 0.0
    out[1] = max(log_trend[j] + trend_shift, 0.0)
    out[2] = max(log_w[j] - boost_shift, 0.0)
    out[3] = s_cont[j] * cont_fade[j] if inside else 0.0  # fades as j gets interactions
    out[4] = s_cooc[j, 1] if inside else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def refresh_item(i, item_w, trend, alpha, fade, ctx_norm, cand_norm, log_trend, log_w, cont_fade):
    """The per-item caches of one item after its counts changed (`cont_fade`: the content feature's
    factor exp(-fade * max(log w, 0)), w ** -fade past one event)."""
    w = max(item_w[i], 1.0)
    ctx_norm[i] = w ** -alpha
    cand_norm[i] = w ** (alpha - 1.0)
    log_w[i] = np.log(item_w[i]) if item_w[i] > 0 else -np.inf
    log_trend[i] = np.log(trend[i]) if trend[i] > 0 else -np.inf
    cont_fade[i] = np.exp(-fade * max(log_w[i], 0.0))


@numba.njit(cache=True, nogil=True)
def refresh_items(n, item_w, trend, alpha, fade, ctx_norm, cand_norm, log_trend, log_w, cont_fade):
    for i in range(n):
        refresh_item(i, item_w, trend, alpha, fade, ctx_norm, cand_norm, log_trend, log_w, cont_fade)


@numba.njit(cache=True, nogil=True)
def _tally_mixes(e, i, target, n, touched, out_scores, s_cooc, cand_norm, weights, scales, eff, mixes,
                 mix_ema, above, params):
    """One event's tally: under each mix, would its item i (a candidate, served score `target`) rank
    in the top MIX_K of the candidates? Candidate j outranks i under mix x when d_j + x g_j > 0, d and
    g relative to i (the candidate's score less its co-occurrence parts, from the served score). Moves
    each mix's moving average and switches the serving mix (params[P_MIX]) to a leader by MIX_MARGIN."""
    total = weights[0] + weights[4]
    ca, cb = total / scales[0], total / scales[4]
    ra, rb = eff[0], eff[4]
    ta = s_cooc[i, 0] * cand_norm[i]
    tb = s_cooc[i, 1]
    base_t = target - ra * ta - rb * tb + cb * tb
    slope_t = ca * ta - cb * tb
    for q in range(mixes.shape[0]):
        above[q] = 0
    for m in range(n):
        j = touched[m]
        if j == i:
            continue
        fa = s_cooc[j, 0] * cand_norm[j]
        fb = s_cooc[j, 1]
        d = out_scores[e, m] - ra * fa - rb * fb + cb * fb - base_t
        g = ca * fa - cb * fb - slope_t
        for q in range(mixes.shape[0]):
            above[q] += d + mixes[q] * g > 0.0
    _follow_leader(above, mix_ema, MIX_EVERY / MIX_EVENTS, MIX_MARGIN, params, P_MIX)


@numba.njit(cache=True, nogil=True, inline="always")
def _follow_leader(above, ema, rate, margin, params, serving_at):
    """A tally's tail: each option's moving average moves by whether the event's item had fewer than
    MIX_K candidates above it under that option; the serving option (params[serving_at], < 0: none)
    moves to the leader once it leads by `margin`."""
    serving = int(params[serving_at])
    best = serving
    for q in range(ema.shape[0]):
        ema[q] += ((1.0 if above[q] < MIX_K else 0.0) - ema[q]) * rate
        if best < 0 or ema[q] > ema[best]:
            best = q
    if serving < 0 or ema[best] > ema[serving] + margin:
        params[serving_at] = best


@numba.njit(cache=True, nogil=True)
def refresh_first_cut(fp_cols, fp_w, fp_err, params):
    """params[P_FIRST_CUT]: the P_FIRST_K-th largest weight lower bound of the first-picks row (-1
    while it holds no more entries than that)."""
    k = int(params[P_FIRST_K])
    lower = np.empty(fp_cols.shape[1])
    m = 0
    for s in range(fp_cols.shape[1]):
        if fp_cols[0, s] >= 0:
            lower[m] = fp_w[0, s] - params[P_ERR] * fp_err[0, s]
            m += 1
    params[P_FIRST_CUT] = _kth_largest(lower, m, k - 1) if 0 < k < m else -1.0


@numba.njit(cache=True, nogil=True)
def _tally_first(e, i, target, n, touched, out_scores, s_cooc, cand_norm, eff, first_tally, above, params):
    """One first event's tally: under each gain g of the first-picks row (first_tally[0]), would its
    item i (a candidate, served score `target`) rank in the top MIX_K of the candidates? A candidate's
    score is its item-only part plus g times its co-occurrence part. Moves each gain's moving average
    (first_tally[1]) and switches the serving gain (params[P_FIRST_GAIN]) to a leader by FIRST_MARGIN."""
    serving = int(params[P_FIRST_GAIN])
    g = first_tally[0, serving]
    n_g = first_tally.shape[1]
    part_i = eff[0] * s_cooc[i, 0] * cand_norm[i] + eff[4] * s_cooc[i, 1]
    rest_i = target - g * part_i
    for q in range(n_g):
        above[q] = 0
    for m in range(n):
        j = touched[m]
        if j == i:
            continue
        part = eff[0] * s_cooc[j, 0] * cand_norm[j] + eff[4] * s_cooc[j, 1]
        rest = out_scores[e, m] - g * part
        for q in range(n_g):
            above[q] += rest + first_tally[0, q] * part > rest_i + first_tally[0, q] * part_i
    _follow_leader(above, first_tally[1], FIRST_RATE, FIRST_MARGIN, params, P_FIRST_GAIN)


@numba.njit(cache=True, nogil=True, inline="always")
def first_weights(eff, first_tally, params, out):
    """`eff` with the co-occurrence weights times the serving first-picks gain (a first event's blend)."""
    for f in range(N_FEATURES):
        out[f] = eff[f]
    if first_tally.shape[1] > 0:
        gain = first_tally[0, int(params[P_FIRST_GAIN])]
        out[0] *= gain
        out[4] *= gain


@numba.njit(cache=True, nogil=True, inline="always")
def _log_pair(log_e, log_p, log_k, log_n, e, p, k):
    """Append a learned pair (event e, partner p, step back k; p = -1: a first pick) to the pair log,
    when there is one (the item-side delta another worker applies)."""
    if log_e.shape[0] > 0:
        q = log_n[0]
        log_e[q] = e
        log_p[q] = p
        log_k[q] = k
        log_n[0] = q + 1


@numba.njit(cache=True, nogil=True)
def score_then_learn(users, items, score, recent, recent_head, recent_len, user_events, item_w,
                     item_events, trend, ctx_norm, cand_norm, log_trend, log_w, cont_fade, nb_cols, nb_w,
                     nb_err, cn_cols, cn_w, top_cols, in_top, fresh, fresh_state, seen_list,
                     counters, event_ring, decay_pow, pair_w, params, weights, scales, scale_n,
                     rng, stamp, s_cooc, s_cont, touched, out_n, out_cols, out_scores, out_target,
                     out_in_cand, item_side, log_e, log_p, log_k, log_n, mixes, mix_ema, out_feats, fp_cols,
                     fp_w, fp_err, first_tally):
    """For each event in order: (score) candidates and the target's score with the state before the
    event, one blend step, the co-occurrence mixes' tally (`mixes`, `mix_ema`, params[P_MIX]: the
    serving mix's index, -1: none); (learn) the event. A user's first event scores from the first-picks
    row (fp_*) at the serving gain and tallies the gains instead of the blend step and the mixes, and
    its item joins that row (pair log partner -1). `counters`: [stamp counter, n_seen, event ring head,
    events]. Writes out_* rows only where `score` is set; `out_feats` (rows, width, N_FEATURES), when it
    has rows, gets each candidate's raw features (the deep stage's input).

    Events whose `item_side` is False change the user's state only (their item-side effect came in a
    delta from another worker, `apply_item_delta`). With a non-empty pair log, each learned pair
    (event e, partner p, step back k) is written to log_e/log_p/log_k at log_n[0] (the item-side
    delta another worker applies)."""
    context = int(params[P_CONTEXT])
    window = int(params[P_WINDOW])
    alpha = params[P_ALPHA]
    boost = params[P_BOOST]
    lr = params[P_LR]
    momentum = params[P_MOMENTUM]
    n_neg = int(params[P_NEGATIVES])
    half_life = params[P_HALF_LIFE]
    ref = params[P_REF]
    clock = params[P_CLOCK]
    width = recent.shape[1]
    ring = event_ring.shape[0]
    boost_shift = np.log(boost)
    feats = np.empty(N_FEATURES)
    pos = np.empty(N_FEATURES)
    diff = np.empty(N_FEATURES)
    grad = np.empty(N_FEATURES)
    eff = np.empty(N_FEATURES)
    mean_abs = np.empty(N_FEATURES)
    n_mix = mixes.shape[0]
    mix_above = np.zeros(n_mix, np.int64)
    gain_above = np.zeros(first_tally.shape[1], np.int64)
    eff_first = np.empty(N_FEATURES)
    with_feats = out_feats.shape[0] > 0
    for e in range(users.shape[0]):
        u = users[e]
        i = items[e]
        counters[0] += 1
        cur = counters[0]
        trend_shift = (ref - clock) / half_life * np.log(2.0) - boost_shift
        n_fresh = fresh_state[1]
        first = is_first(u, user_events, first_tally)
        n = gather_candidates(u, recent, recent_head, recent_len, ctx_norm, nb_cols, nb_w, nb_err, cn_cols,
                              cn_w, top_cols, fresh, n_fresh, decay_pow, context, alpha, stamp, cur, s_cooc,
                              s_cont, touched, params[P_ERR], first, fp_cols, fp_w, fp_err, params[P_FIRST_W],
                              params[P_FIRST_CUT])
        effective_weights(weights, scales, mixes, params, eff)
        if score[e]:
            out_n[e] = n
            in_cand = False
            if first:
                first_weights(eff, first_tally, params, eff_first)
                e0, e1, e2, e3, e4 = eff_first[0], eff_first[1], eff_first[2], eff_first[3], eff_first[4]
            else:
                e0, e1, e2, e3, e4 = eff[0], eff[1], eff[2], eff[3], eff[4]
            for m in range(n):
                # every j in touched is a candidate of this event (stamp == cur): `_features`, inlined,
                # summed in the same order (the same float result)
                j = touched[m]
                f0 = s_cooc[j, 0] * cand_norm[j]
                f1 = max(log_trend[j] + trend_shift, 0.0)
                f2 = max(log_w[j] - boost_shift, 0.0)
                f3 = s_cont[j] * cont_fade[j]
                f4 = s_cooc[j, 1]
                value = e0 * f0
                value += e1 * f1
                value += e2 * f2
                value += e3 * f3
                value += e4 * f4
                out_cols[e, m] = j
                out_scores[e, m] = value
                if with_feats:
                    out_feats[e, m, 0] = f0
                    out_feats[e, m, 1] = f1
                    out_feats[e, m, 2] = f2
                    out_feats[e, m, 3] = f3
                    out_feats[e, m, 4] = f4
                if j == i:
                    in_cand = True
                    out_target[e] = value
            out_in_cand[e] = in_cand
            if first and in_cand:
                _tally_first(e, i, out_target[e], n, touched, out_scores, s_cooc, cand_norm, eff, first_tally,
                             gain_above, params)
            # the mixes' tally, on every MIX_EVERY-th event whose item is a candidate (else no mix
            # could list it); not on first events, whose co-occurrence part is the first-picks row's
            elif n_mix > 0 and in_cand and not first and counters[3] % MIX_EVERY == 0:
                _tally_mixes(e, i, out_target[e], n, touched, out_scores, s_cooc, cand_norm, weights, scales,
                             eff, mixes, mix_ema, mix_above, params)
        # one online step of the blend: the event's item against sampled negatives, pre-event state (a
        # first event steps on its item-only features: the first-picks row's scale is not a context
        # item's, and its weight is the tally's)
        n_seen = counters[1]
        step_cur = -1 if first else cur
        if item_w[i] > 0 and n_seen > 1 and n_neg > 0:
            _features(i, s_cooc, s_cont, stamp, step_cur, cand_norm, log_trend, log_w, cont_fade, trend_shift,
                      boost_shift, pos)
            for f in range(N_FEATURES):
                grad[f] = 0.0
            for f in range(N_FEATURES):
                mean_abs[f] = abs(pos[f])
            used = 0
            filled = min(counters[2], ring)
            for q in range(n_neg):
                if q % 2 == 0 or filled == 0:  # uniform over seen items
                    j = seen_list[_next_random(rng) % np.uint64(n_seen)]
                else:  # by recent popularity: an item of a recent event
                    j = event_ring[_next_random(rng) % np.uint64(filled)]
                if j == i:
                    continue
                _features(j, s_cooc, s_cont, stamp, step_cur, cand_norm, log_trend, log_w, cont_fade,
                          trend_shift, boost_shift, feats)
                margin = 0.0
                for f in range(N_FEATURES):
                    mean_abs[f] += abs(feats[f])
                    diff[f] = (pos[f] - feats[f]) / scales[f]
                    margin += diff[f] * weights[f]
                g = 0.5 * (1.0 - np.tanh(0.5 * margin))
                for f in range(N_FEATURES):
                    grad[f] += g * diff[f]
                used += 1
            if used:
                for f in range(N_FEATURES):
                    weights[f] += lr * grad[f] / used
                    m_abs = mean_abs[f] / (used + 1)
                    if m_abs > 0:
                        # the plain mean of the first samples, then a moving average: a scale set by
                        # its first sample alone stayed off for tens of thousands of events
                        n_f = scale_n[f]
                        mom = n_f / (n_f + 1.0) if n_f < params[P_SCALE_WARMUP] else momentum
                        scales[f] = mom * scales[f] + (1.0 - mom) * m_abs
                        scale_n[f] = n_f + 1.0
        # learn the event
        learn_items = item_side[e]
        if first and learn_items:
            add_pair(fp_cols, fp_w, fp_err, 0, i, boost)
            params[P_FIRST_W] += boost
            refresh_first_cut(fp_cols, fp_w, fp_err, params)
            _log_pair(log_e, log_p, log_k, log_n, e, -1, 0)
        if u >= 0:
            length = min(recent_len[u], window)
            if learn_items:
                for k in range(length):
                    p = recent[u, (recent_head[u] - 1 - k) % width]
                    if p < 0 or p == i:
                        continue
                    w = boost * pair_w[k]
                    add_pair(nb_cols, nb_w, nb_err, i, p, w)
                    add_pair(nb_cols, nb_w, nb_err, p, i, w)
                    _log_pair(log_e, log_p, log_k, log_n, e, p, k)
            recent[u, recent_head[u] % width] = i
            recent_head[u] = (recent_head[u] + 1) % width
            if recent_len[u] < width:
                recent_len[u] += 1
            user_events[u] += 1
        if learn_items:
            learn_item(i, 1, boost * 2.0 ** ((clock - ref) / half_life), boost, alpha, params[P_FADE], item_w,
                       item_events, trend, ctx_norm, cand_norm, log_trend, log_w, cont_fade, top_cols, in_top,
                       fresh, fresh_state, seen_list, counters, event_ring)
            clock += 1.0
        counters[3] += 1
    params[P_CLOCK] = clock


@numba.njit(cache=True, nogil=True, inline="always")
def learn_item(i, n, trend_add, boost, alpha, fade, item_w, item_events, trend, ctx_norm, cand_norm,
               log_trend, log_w, cont_fade, top_cols, in_top, fresh, fresh_state, seen_list, counters,
               event_ring):
    """The item side of `n` events of item i: first-seen list and fresh ring, counts, the trending
    count (+ `trend_add`), the cached transforms, the trending set, the recent-events ring."""
    if item_events[i] == 0:
        seen_list[counters[1]] = i
        counters[1] += 1
        fresh[fresh_state[0] % fresh.shape[0]] = i
        fresh_state[0] += 1
        fresh_state[1] = min(fresh_state[1] + 1, fresh.shape[0])
    item_events[i] += n
    item_w[i] += boost * n
    trend[i] += trend_add
    refresh_item(i, item_w, trend, alpha, fade, ctx_norm, cand_norm, log_trend, log_w, cont_fade)
    if not in_top[i]:
        weakest = 0
        weakest_v = np.inf
        for s in range(top_cols.shape[0]):
            c = top_cols[s]
            if c < 0:
                weakest = s
                weakest_v = -np.inf
                break
            if trend[c] < weakest_v:
                weakest_v = trend[c]
                weakest = s
        if trend[i] > weakest_v:
            if top_cols[weakest] >= 0:
                in_top[top_cols[weakest]] = False
            top_cols[weakest] = i
            in_top[i] = True
    ring = event_ring.shape[0]
    for _ in range(min(n, ring // 64)):  # one entry per event: the ring samples by recent popularity
        event_ring[counters[2] % ring] = i
        counters[2] += 1


@numba.njit(cache=True, nogil=True)
def apply_item_delta(cols, counts, trend_sums, pair_a, pair_b, pair_w, n_events, params, item_w,
                     item_events, trend, ctx_norm, cand_norm, log_trend, log_w, cont_fade, top_cols, in_top,
                     fresh, fresh_state, seen_list, counters, event_ring, nb_cols, nb_w, nb_err, first_cols,
                     first_w, fp_cols, fp_w, fp_err):
    """Apply another worker's item-side delta: the event clock moves on by its `n_events` (the clock
    counts every worker's events), then each item gets its `counts` events with their trending sum
    (`trend_sums`: sum over its events of 2 ** ((event clock - delta end clock) / half-life)), and each
    pair (a, b) its raw weight both ways, and each first pick (`first_cols`, `first_w`) its raw weight in
    the first-picks row, all scaled by this worker's drift boost (drift reactions stay local)."""
    boost = params[P_BOOST]
    half_life = params[P_HALF_LIFE]
    alpha = params[P_ALPHA]
    params[P_CLOCK] += n_events
    scale = boost * 2.0 ** ((params[P_CLOCK] - params[P_REF]) / half_life)
    for q in range(cols.shape[0]):
        if counts[q] == 0:  # only a pair partner
            continue
        learn_item(cols[q], counts[q], scale * trend_sums[q], boost, alpha, params[P_FADE], item_w,
                   item_events, trend, ctx_norm, cand_norm, log_trend, log_w, cont_fade, top_cols, in_top,
                   fresh, fresh_state, seen_list, counters, event_ring)
    for q in range(pair_a.shape[0]):
        w = boost * pair_w[q]
        add_pair(nb_cols, nb_w, nb_err, pair_a[q], pair_b[q], w)
        add_pair(nb_cols, nb_w, nb_err, pair_b[q], pair_a[q], w)
    for q in range(first_cols.shape[0]):
        w = boost * first_w[q]
        add_pair(fp_cols, fp_w, fp_err, 0, first_cols[q], w)
        params[P_FIRST_W] += w
    if first_cols.shape[0] > 0:
        refresh_first_cut(fp_cols, fp_w, fp_err, params)


@numba.njit(cache=True, nogil=True, inline="always")
def _insert_best(scores, m, best, size, cols, item_events, below):
    """The `size` best of scores[:m] whose item has fewer than `below` events, into `best` (indices,
    descending; ties keep the earlier index first); returns how many."""
    n = 0
    for r in range(m):
        if item_events[cols[r]] < below:
            n = insert_ranked(scores, r, best, n, size)
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _mark_history(u, hist_start, hist_len, pool, mark, token):
    """mark[item] = token for each item of user u's history in `pool` (-1: an evicted item's hole)."""
    h0 = hist_start[u]
    for q in range(hist_len[u]):
        h = pool[h0 + q]
        if h >= 0:
            mark[h] = token


SOURCE_BACKGROUND = N_FEATURES  # `top_k_users` source codes past the features' own
SOURCE_EXPLORE = N_FEATURES + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_list(b, k, slots, n_fresh, fresh_best, f_cols, f_scores, n_merged, m_cols, m_scores, m_src,
                 s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade, trend_shift, boost_shift,
                 eff, feats, out_n, out_cols, out_scores, out_src, out_feats):
    """User b's row of a list of k: the first of the `n_merged` (<= k) merged entries, then up to `slots`
    of the last places for the best new candidates (`fresh_best`) not among them; each listed
    candidate's source is its strongest feature. `out_feats` with rows: the listed items' raw
    features."""
    with_feats = out_feats.shape[0] > 0
    n_new = 0
    if slots > 0:
        for r in range(n_fresh):
            if n_new == slots:
                break
            c = fresh_best[r]
            col = f_cols[c]
            listed = False
            for q in range(n_merged):
                if m_cols[q] == col:
                    listed = True
                    break
            if not listed:
                out_cols[b, n_new] = col  # parked at the row's start; moved behind the kept part below
                out_scores[b, n_new] = f_scores[c]
                n_new += 1
    keep = min(n_merged, k - n_new)
    for q in range(n_new - 1, -1, -1):
        out_cols[b, keep + q] = out_cols[b, q]
        out_scores[b, keep + q] = out_scores[b, q]
        out_src[b, keep + q] = SOURCE_EXPLORE
    for q in range(keep):
        out_cols[b, q] = m_cols[q]
        out_scores[b, q] = m_scores[q]
        src = m_src[q]
        if src < 0 or with_feats:  # a candidate's sums are still valid: its stamp is this user's
            _features(m_cols[q], s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade,
                      trend_shift, boost_shift, feats)
        if src < 0:
            best = 0
            for f in range(1, N_FEATURES):
                if eff[f] * feats[f] > eff[best] * feats[best]:
                    best = f
            src = best
        out_src[b, q] = src
        if with_feats:
            for f in range(N_FEATURES):
                out_feats[b, q, f] = feats[f]
    if with_feats:
        for q in range(keep, keep + n_new):  # the exploration picks
            _features(out_cols[b, q], s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade,
                      trend_shift, boost_shift, feats)
            for f in range(N_FEATURES):
                out_feats[b, q, f] = feats[f]
    out_n[b] = keep + n_new


@numba.njit(cache=True, nogil=True)
def top_k_users(users, k, exclude_recent, explore_slots, explore_below, live, item_events, user_events, order,
                bg_values, mark, token, recent, recent_head, recent_len, hist_start, hist_len, hist_pool,
                ctx_norm, cand_norm, log_trend, log_w, cont_fade, nb_cols, nb_w, nb_err, cn_cols, cn_w,
                top_cols, fresh, fresh_state, decay_pow, params, weights, scales, stamp, counters, s_cooc,
                s_cont, touched, out_n, out_cols, out_scores, out_src, mixes, out_feats, out_mass, plain_k,
                plain_slots, p_n, p_cols, p_scores, p_src, fp_cols, fp_w, fp_err, first_tally):
    """Top-k lists of many users in one pass (`SparseRecommender.recommend`): per user its candidates
    and their blend, less the user's recent items and history (`exclude_recent`) and dead columns,
    merged with the background order (ties: the candidate first); then up to `explore_slots` of the
    last places go to the best candidates seen fewer than `explore_below` times. `mark` with
    `token + b` marks user b's recent items and history; a user with no events yet (or unknown, u < 0)
    gets the first-picks row's candidates at its serving gain, as score_then_learn scores first events;
    out_src holds a feature index, SOURCE_BACKGROUND or SOURCE_EXPLORE. The source (the feature
    contributing most) is worked out for listed items only. `out_feats` (users, k, N_FEATURES), when it
    has rows, gets each listed item's raw features (the deep stage's input; 0 co-occurrence and content
    for background items), and `out_mass` (users, N_FEATURES) each feature's positive sum over the
    user's candidates.

    With rows in `p_n`, the same pass also writes a second, shorter list of `plain_k` <= k with
    `plain_slots` exploration slots into p_* (what the deep stage's lists keep from the plain list):
    the merged order's first entries are the same for both lengths (stable top-k, then a merge)."""
    n_cols = len(live)
    width = len(touched)
    f_cols = np.empty(width, np.int64)
    f_scores = np.empty(width, np.float32)
    feats = np.empty(N_FEATURES)
    eff = np.empty(N_FEATURES)
    effective_weights(weights, scales, mixes, params, eff)
    eff_first = np.empty(N_FEATURES)
    first_weights(eff, first_tally, params, eff_first)
    context = int(params[P_CONTEXT])
    boost_shift = np.log(params[P_BOOST])
    trend_shift = (params[P_REF] - params[P_CLOCK]) / params[P_HALF_LIFE] * np.log(2.0) - boost_shift
    bg_cols = np.empty(k, np.int64)
    m_cols = np.empty(k, np.int64)
    m_scores = np.empty(k, np.float64)
    m_src = np.empty(k, np.int64)
    slots = min(explore_slots, k - 1) if k > 1 else 0
    with_mass = out_mass.shape[0] > 0
    with_plain = p_n.shape[0] > 0
    p_slots = min(plain_slots, plain_k - 1) if plain_k > 1 else 0
    chosen = np.empty(k, np.int64)
    fresh_best = np.empty(k + slots, np.int64)
    p_fresh = np.empty(plain_k + p_slots if with_plain else 0, np.int64)
    no_feats = np.zeros((0, 1, N_FEATURES), np.float32)
    for b in range(len(users)):
        u = users[b]
        counters[0] += 1
        cur = counters[0]  # every gathered candidate has stamp == cur
        first = is_first(u, user_events, first_tally)
        n = gather_candidates(u, recent, recent_head, recent_len, ctx_norm, nb_cols, nb_w, nb_err, cn_cols,
                              cn_w, top_cols, fresh, fresh_state[1], decay_pow, context, params[P_ALPHA],
                              stamp, cur, s_cooc, s_cont, touched, params[P_ERR], first, fp_cols, fp_w,
                              fp_err, params[P_FIRST_W], params[P_FIRST_CUT])
        ew = eff_first if first else eff
        mine = token + b
        if exclude_recent and u >= 0:
            for t in range(recent.shape[1]):
                if recent[u, t] >= 0:
                    mark[recent[u, t]] = mine
            _mark_history(u, hist_start, hist_len, hist_pool, mark, mine)  # and everything else the user had
        m = 0
        for i in range(n):
            j = touched[i]
            if live[j] and mark[j] != mine:
                _features(j, s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade, trend_shift,
                          boost_shift, feats)
                value = 0.0
                for f in range(N_FEATURES):  # summed in feature order, as score_then_learn sums
                    value += ew[f] * feats[f]
                if with_mass:
                    for f in range(N_FEATURES):
                        out_mass[b, f] += max(feats[f], 0.0)
                f_cols[m] = j
                f_scores[m] = value
                m += 1
        # the k best, and the k + slots best new ones, in stable descending order: no full sort
        n_chosen = _insert_best(f_scores, m, chosen, k, f_cols, item_events, 1 << 62)
        n_fresh = 0
        if slots > 0:
            n_fresh = _insert_best(f_scores, m, fresh_best, k + slots, f_cols, item_events, explore_below)
        n_bg = 0
        start = 0
        while n_bg < k and start < len(order):
            col = order[start]
            start += 1
            if col < n_cols and live[col] and stamp[col] != cur and mark[col] != mine:
                bg_cols[n_bg] = col
                n_bg += 1
        i = 0
        j = 0
        n_merged = 0
        while n_merged < k and (i < n_chosen or j < n_bg):
            if j >= n_bg or (i < n_chosen and f_scores[chosen[i]] >= bg_values[bg_cols[j]]):
                c = chosen[i]
                m_cols[n_merged] = f_cols[c]
                m_scores[n_merged] = f_scores[c]
                m_src[n_merged] = -1  # a candidate: its strongest feature, below
                i += 1
            else:
                m_cols[n_merged] = bg_cols[j]
                m_scores[n_merged] = bg_values[bg_cols[j]]
                m_src[n_merged] = SOURCE_BACKGROUND
                j += 1
            n_merged += 1
        if with_plain:
            n_p_fresh = 0
            if p_slots > 0:
                n_p_fresh = _insert_best(f_scores, m, p_fresh, plain_k + p_slots, f_cols, item_events,
                                         explore_below)
            _finish_list(b, plain_k, p_slots, n_p_fresh, p_fresh, f_cols, f_scores, min(n_merged, plain_k),
                         m_cols, m_scores, m_src, s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w,
                         cont_fade, trend_shift, boost_shift, ew, feats, p_n, p_cols, p_scores, p_src,
                         no_feats)
        _finish_list(b, k, slots, n_fresh, fresh_best, f_cols, f_scores, n_merged, m_cols, m_scores, m_src,
                     s_cooc, s_cont, stamp, cur, cand_norm, log_trend, log_w, cont_fade, trend_shift,
                     boost_shift, ew, feats, out_n, out_cols, out_scores, out_src, out_feats)


@numba.njit(cache=True, nogil=True)
def pack_rows(n, buf_cols, buf_scores, cols, scores):
    """The first n[e] entries of each row of the buffers into cols / scores, the rest -1 / 0."""
    for e in range(n.shape[0]):
        for m in range(n[e]):
            cols[e, m] = buf_cols[e, m]
            scores[e, m] = buf_scores[e, m]
        for m in range(n[e], cols.shape[1]):
            cols[e, m] = -1
            scores[e, m] = 0.0


@numba.njit(cache=True, nogil=True)
def add_history(start, users, items, max_history, hist_start, hist_len, hist_cap, hist_total, pool, top):
    """Each event's item joins its user's history (a set: an item already there is not added again),
    events [start, n) in order. A history lives in `pool` from `hist_start[u]`, `hist_cap[u]` slots;
    full, it moves to twice the room at the pool's top (`top[0]`); at `max_history` items it keeps the
    newest (a ring). Returns where it stopped: n, or an event that needs a bigger pool."""
    for e in range(start, users.shape[0]):
        u = users[e]
        i = items[e]
        if u < 0:
            continue
        h0 = hist_start[u]
        n = hist_len[u]
        seen = False
        for q in range(n):
            if pool[h0 + q] == i:
                seen = True
                break
        if seen:
            continue
        if n < hist_cap[u]:
            pool[h0 + n] = i
            hist_len[u] = n + 1
        elif hist_cap[u] < max_history:
            cap = min(max(2 * hist_cap[u], 4), max_history)
            if top[0] + cap > pool.shape[0]:
                return e
            for q in range(n):
                pool[top[0] + q] = pool[h0 + q]
            hist_start[u] = top[0]
            hist_cap[u] = cap
            top[0] += cap
            pool[top[0] - cap + n] = i
            hist_len[u] = n + 1
        else:  # full: the oldest goes
            pool[h0 + hist_total[u] % max_history] = i
        hist_total[u] += 1
    return users.shape[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _kth_largest(a, k, t):
    """The (t + 1)-th largest of a[:k], by quickselect in place (a is reordered)."""
    lo, hi = 0, k - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if t <= j:
            hi = j
        elif t >= i:
            lo = i
        else:
            return a[t]
    return a[t]


_SELECT_BUCKETS = 64


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket(value, lo, scale, n_buckets):
    """`_kth_largest_of`'s bucket of a value: monotone in it (both of its passes use this one)."""
    return min(int((np.float64(value) - lo) * scale), n_buckets - 1)


@numba.njit(cache=True, nogil=True)
def _kth_largest_of(values, k, t, work, counts):
    """The (t + 1)-th largest of values[:k], values left as they are: a histogram of `counts.shape[0]`
    buckets over their range finds the bucket that holds it (the bucket is monotone in the value, so
    every value of a higher bucket is larger), and a quickselect among that bucket's values (copied into
    `work`) finds it there: three light passes instead of a quickselect over all k."""
    lo = values[0]
    hi = values[0]
    for q in range(1, k):
        lo = min(lo, values[q])
        hi = max(hi, values[q])
    if not hi > lo:
        return lo
    n_buckets = counts.shape[0]
    scale = n_buckets / (np.float64(hi) - np.float64(lo))
    counts[:] = 0
    for q in range(k):
        counts[_bucket(values[q], lo, scale, n_buckets)] += 1
    above = 0
    b = n_buckets - 1
    while above + counts[b] <= t:
        above += counts[b]
        b -= 1
    m = 0
    for q in range(k):
        if _bucket(values[q], lo, scale, n_buckets) == b:
            work[m] = values[q]
            m += 1
    return _kth_largest(work, m, t - above)


@numba.njit(cache=True, nogil=True)
def deep_candidates(users, items, prev, cand_n, cand_cols, scores, feats, hist_start, hist_len, pool, mark,
                    token, out_cols, out_slots, out_blend, out_raw, out_mass, out_top):
    """The deep stage's candidates of each event: its best c (= out_cols.shape[1]) candidates by score that
    are none of its user's items before it (the history in `pool`, learned before the batch, and the items
    of the user's earlier events in the batch: `prev[e]`, the user's previous event there, -1 none; ties
    at the c-th score: the earlier row positions), in row order. Writes their item columns, row positions,
    scores and raw features (`feats` [n, width, F]), and each feature's positive sum over all the event's
    kept candidates (out_mass [n, F]); padding: column and position -1, score -inf, features 0. `mark`
    (one int per item column) with `token + e` marks event e's items. out_top[e]: the event's highest
    candidate score, its user's items included (-inf: none)."""
    c = out_cols.shape[1]
    n_feat = feats.shape[2]
    keep_m = np.empty(cand_cols.shape[1], np.int64)
    keep_v = np.empty(cand_cols.shape[1], np.float32)
    work = np.empty(cand_cols.shape[1], np.float32)
    counts = np.empty(_SELECT_BUCKETS, np.int64)
    for e in range(users.shape[0]):
        u = users[e]
        cur = token + e
        if u >= 0:
            _mark_history(u, hist_start, hist_len, pool, mark, cur)
        p = prev[e]
        while p >= 0:
            mark[items[p]] = cur
            p = prev[p]
        for f in range(n_feat):
            out_mass[e, f] = 0.0
        k = 0
        top = -np.inf
        for m in range(cand_n[e]):
            top = max(top, scores[e, m])
            if mark[cand_cols[e, m]] == cur or not np.isfinite(scores[e, m]):
                continue
            keep_m[k] = m
            keep_v[k] = scores[e, m]
            k += 1
            for f in range(n_feat):
                out_mass[e, f] += max(feats[e, m, f], 0.0)
        out_top[e] = top
        threshold = -np.inf
        ties = k  # how many entries scoring the threshold are taken
        if k > c:  # the c-th largest score: what is above it, and in row order what ties with it
            threshold = _kth_largest_of(keep_v, k, c - 1, work, counts)
            above = 0
            for q in range(k):
                above += keep_v[q] > threshold
            ties = c - above
        r = 0
        for q in range(k):
            v = keep_v[q]
            if v > threshold or (v == threshold and ties > 0):
                if v == threshold:
                    ties -= 1
                m = keep_m[q]
                out_cols[e, r] = cand_cols[e, m]
                out_slots[e, r] = m
                out_blend[e, r] = v
                for f in range(n_feat):
                    out_raw[e, r, f] = feats[e, m, f]
                r += 1
        for q in range(r, c):
            out_cols[e, q] = -1
            out_slots[e, q] = -1
            out_blend[e, q] = -np.inf
            for f in range(n_feat):
                out_raw[e, q, f] = 0.0


@numba.njit(cache=True, nogil=True)
def feature_rows(src, dst):
    """dst[e, m, k] = src[k, e, m] (feature-major features into one row per candidate): per event, each
    feature's contiguous run is read and written into the event's block, which stays in L1."""
    n_feat, n, c = src.shape
    for e in range(n):
        for k in range(n_feat):
            for m in range(c):
                dst[e, m, k] = src[k, e, m]
