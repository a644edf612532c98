/* cluster_limits_schema.c -- the tables of the shared provider limits, a
 * step of the PostgreSQL store's migrations (daemon/store). Kept apart from
 * cluster_limits.c so the store links it without the limits' code.
 *
 * One bucket per provider name: a GCRA per rate dimension (the theoretical
 * arrival time, microseconds since the Unix epoch on the server's clock, as
 * the local limiter keeps it on its own), the budget charged so far per
 * dimension (a running sum in microseconds of budget, which bounds what a
 * late refund may give back: see loom_rl_lease), the shared pause, and the
 * concurrency slots leased per node (expiring with their window).
 *
 * loom_rl_lease is the one statement of a lease, a return and a pause: the
 * bucket row is locked (FOR UPDATE), so leases of several daemons for one
 * provider are serialised, and everything is done in one round trip:
 *   1. EXTRA units are charged (tokens a call used beyond its estimate: a
 *      debt, no fit test: they were spent already);
 *   2. RET units are given back (what a lease did not use, or a call's
 *      tokens under its estimate), never below the server's now nor below
 *      now + (charged - RET_C0): see the comment above the function;
 *   3. up to WANT_N calls of COST units each are granted: the most that fits
 *      now in every limited dimension with the tolerance ALLOW_US (the
 *      caller's: one second less 100 ms less its window), nothing while
 *      paused. When nothing fits now but all WANT_N would within DEFER_US,
 *      they are granted to be spent from START_US on (a deferred lease: the
 *      GCRA charged as if asked for then, which it fits), so that daemons
 *      contending for the bucket queue up in it rather than each ask again
 *      and again; else WAIT_US says when they would fit;
 *   4. the node's concurrency slots are set to what it wants, capped so the
 *      unexpired slots of every node stay within the limit, and beyond the
 *      slots of its calls in flight (INFLIGHT), while another node waits
 *      with none (a node denied keeps a row of 0 slots), to a fair share:
 *      the limit over the nodes that hold or want slots, at least one.
 *      FILL is what its calls in flight may reach now: the fair share while
 *      another node starves, so a busy node lets go of its extra slots as
 *      its calls end instead of refilling them; the slots expire WINDOW +
 *      SLACK from now;
 *   5. PAUSE_MS > 0 extends the shared pause and sends NOTIFY loom_limits.
 * Rates arrive as arguments (the caller's configured limits): the bucket
 * holds state only, so a daemon with other limits is not refused, it just
 * spends by its own. */
#include "daemon/cluster/cluster_limits.h"

const char CLUSTER_LIMITS_SCHEMA[] =
    "CREATE TABLE loom_rl_bucket ("
    " provider text PRIMARY KEY,"
    " tat_req_us bigint NOT NULL DEFAULT 0,"
    " tat_tok_us bigint NOT NULL DEFAULT 0,"
    " tat_in_us bigint NOT NULL DEFAULT 0,"
    " tat_out_us bigint NOT NULL DEFAULT 0,"
    " charged_req_us bigint NOT NULL DEFAULT 0,"
    " charged_tok_us bigint NOT NULL DEFAULT 0,"
    " charged_in_us bigint NOT NULL DEFAULT 0,"
    " charged_out_us bigint NOT NULL DEFAULT 0,"
    " mark_cur bigint[] NOT NULL DEFAULT '{0,0,0,0}',"
    " max_cur bigint[] NOT NULL DEFAULT '{-4611686018427387904,-4611686018427387904,-4611686018427387904,-4611686018427387904}',"
    " mark_prev bigint[] NOT NULL DEFAULT '{0,0,0,0}',"
    " max_prev bigint[] NOT NULL DEFAULT '{-4611686018427387904,-4611686018427387904,-4611686018427387904,-4611686018427387904}',"
    " paused_until_ms bigint NOT NULL DEFAULT 0,"
    " pause_why text);"
    "CREATE TABLE loom_rl_slots ("
    " provider text NOT NULL,"
    " node text NOT NULL,"
    " slots bigint NOT NULL,"
    " expires_ms bigint NOT NULL,"
    " PRIMARY KEY (provider, node));"
    /* Why the refund floor. What must hold is tat >= E, E the GCRA state of
     * the units charged and not given back so far: a GCRA's state is the
     * max over its charges k of (t_k + the units from k on), t_k the time a
     * charge was made as of (a deferred lease's start). Then every grant
     * fits under E too, whatever is given back later. Giving back U units
     * of a lease splits E's terms in two: those of charges up to the lease,
     * which lose U and were <= tat, so become <= tat - U; and Y, those of
     * the charges after it, unchanged. So max(tat - U, Y) >= E afterwards
     * (never below now either), while tat - U alone is not when Y is
     * larger: when the bucket, without those units, would have been full
     * (clamped to now) since the lease. Bounding Y: with C the running sum
     * of charges (charged_*_us) and M_k = t_k - C just before k, each term
     * is C_now + M_k, so Y = C_now + max M_k over the charges after the
     * lease (those with C before them >= RET_C0, the sum just after the
     * lease). The bucket keeps the max M per epoch of one second of charges,
     * for the current epoch and the one before (mark_*: C where it began):
     * a RET_C0 within them bounds Y by C_now + the max of the epochs from
     * RET_C0's on (a superset of the charges after the lease: never lower).
     * Older, Y <= now + DEFER_US + (C_now - RET_C0), every t_k being at most
     * now + DEFER_US. Under load each charge is made about a tolerance after
     * the state it fits under, M_k runs that much below the busy period's
     * first, and a return or a refund of up to the tolerance less the lease
     * goes through; an epoch holding a charge into a full bucket (the case
     * that needs the floor) keeps refunds of its leases back. */
    "CREATE FUNCTION loom_rl_lease(p_provider text, p_node text, p_limits bigint[],"
    " p_want_n bigint, p_cost bigint[], p_ret bigint[], p_ret_c0 bigint[], p_extra bigint[],"
    " p_slots bigint, p_inflight bigint, p_pause_ms bigint, p_why text, p_window_us bigint, p_slack_us bigint,"
    " p_allow_us bigint, p_defer_us bigint,"
    " OUT granted bigint, OUT start_us bigint, OUT c0 bigint[], OUT wait_us bigint,"
    " OUT paused_until_ms bigint,"
    " OUT slots bigint, OUT fill bigint, OUT now_us bigint) LANGUAGE plpgsql AS $loom$"
    "DECLARE"
    " b loom_rl_bucket%ROWTYPE;"
    " tats bigint[]; chs bigint[]; per bigint[] := ARRAY[0,0,0,0]::bigint[];"
    " lim bigint; room bigint; k bigint; back bigint; w bigint; others bigint; i int;"
    " active bigint; fair bigint; starved bigint;"
    " mc bigint[]; xc bigint[]; mp bigint[]; xp bigint[]; yb bigint;"
    " neg CONSTANT bigint := -4611686018427387904; epoch CONSTANT bigint := 1000000;"
    " now_ms bigint;"
    "BEGIN"
    " now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;"
    " now_ms := now_us / 1000;"
    " INSERT INTO loom_rl_bucket (provider) VALUES (p_provider) ON CONFLICT DO NOTHING;"
    " SELECT * INTO b FROM loom_rl_bucket WHERE provider = p_provider FOR UPDATE;"
    " tats := ARRAY[b.tat_req_us, b.tat_tok_us, b.tat_in_us, b.tat_out_us];"
    " chs := ARRAY[b.charged_req_us, b.charged_tok_us, b.charged_in_us, b.charged_out_us];"
    " mc := b.mark_cur; xc := b.max_cur; mp := b.mark_prev; xp := b.max_prev;"
    " granted := greatest(p_want_n, 0);"
    " wait_us := 0;"
    " FOR i IN 1..4 LOOP"
    "  lim := p_limits[i];"
    "  CONTINUE WHEN lim IS NULL OR lim <= 0;"
    "  IF p_extra[i] > 0 THEN"
    "   back := ceil(p_extra[i]::numeric * 60000000 / lim)::bigint;"
    "   IF chs[i] - mc[i] >= epoch THEN"
    "    mp[i] := mc[i]; xp[i] := xc[i]; mc[i] := chs[i]; xc[i] := neg;"
    "   END IF;"
    "   xc[i] := greatest(xc[i], now_us - chs[i]);"
    "   tats[i] := greatest(tats[i], now_us) + back;"
    "   chs[i] := chs[i] + back;"
    "  END IF;"
    "  IF p_ret[i] > 0 THEN"
    "   back := floor(p_ret[i]::numeric * 60000000 / lim)::bigint;"
    "   IF p_ret_c0[i] >= mc[i] THEN"
    "    yb := chs[i] + xc[i];"
    "   ELSIF p_ret_c0[i] >= mp[i] THEN"
    "    yb := chs[i] + greatest(xp[i], xc[i]);"
    "   ELSE"
    "    yb := now_us + p_defer_us + chs[i] - p_ret_c0[i];"
    "   END IF;"
    "   tats[i] := greatest(now_us, least(tats[i], greatest(tats[i] - back, yb)));"
    "  END IF;"
    "  IF p_cost[i] > 0 THEN"
    "   per[i] := ceil(p_cost[i]::numeric * 60000000 / lim)::bigint;"
    "   IF per[i] > p_allow_us THEN"
    /* one call larger than the tolerance passes when the bucket is full,
     * as the local limiter and the providers do */
    "    k := CASE WHEN tats[i] <= now_us THEN 1 ELSE 0 END;"
    "    w := tats[i] - now_us;"
    "   ELSE"
    "    room := now_us + p_allow_us - greatest(tats[i], now_us);"
    "    k := greatest(room / per[i], 0);"
    "    w := greatest(tats[i], now_us) + greatest(p_want_n, 1) * per[i] - p_allow_us - now_us;"
    "   END IF;"
    "   granted := least(granted, k);"
    "   wait_us := greatest(wait_us, w);"
    "  END IF;"
    " END LOOP;"
    " IF p_pause_ms > 0 THEN"
    "  IF now_ms + p_pause_ms > b.paused_until_ms THEN"
    "   b.paused_until_ms := now_ms + p_pause_ms;"
    "   b.pause_why := p_why;"
    "  END IF;"
    "  PERFORM pg_notify('loom_limits', p_provider);"
    " END IF;"
    " paused_until_ms := b.paused_until_ms;"
    " IF paused_until_ms > now_ms THEN"
    "  granted := 0;"
    "  wait_us := greatest(wait_us, (paused_until_ms - now_ms) * 1000);"
    " END IF;"
    " start_us := 0;"
    " IF granted = 0 AND p_want_n > 0 AND paused_until_ms <= now_ms AND wait_us <= p_defer_us THEN"
    "  granted := p_want_n;"
    "  start_us := greatest(wait_us, 0);"
    " END IF;"
    " IF granted > 0 THEN"
    "  FOR i IN 1..4 LOOP"
    "   IF per[i] > 0 THEN"
    "    IF chs[i] - mc[i] >= epoch THEN"
    "     mp[i] := mc[i]; xp[i] := xc[i]; mc[i] := chs[i]; xc[i] := neg;"
    "    END IF;"
    "    xc[i] := greatest(xc[i], now_us + start_us - chs[i]);"
    "    tats[i] := greatest(tats[i], now_us + start_us) + granted * per[i];"
    "    chs[i] := chs[i] + granted * per[i];"
    "   END IF;"
    "  END LOOP;"
    "  wait_us := 0;"
    " END IF;"
    " wait_us := greatest(wait_us, 0);"
    " c0 := chs;"
    " UPDATE loom_rl_bucket SET tat_req_us = tats[1], tat_tok_us = tats[2],"
    "  tat_in_us = tats[3], tat_out_us = tats[4], charged_req_us = chs[1],"
    "  charged_tok_us = chs[2], charged_in_us = chs[3], charged_out_us = chs[4],"
    "  paused_until_ms = b.paused_until_ms, pause_why = b.pause_why,"
    "  mark_cur = mc, max_cur = xc, mark_prev = mp, max_prev = xp"
    "  WHERE provider = p_provider;"
    " slots := 0; fill := 0;"
    " IF p_limits[5] > 0 THEN"
    "  SELECT coalesce(sum(s.slots), 0), count(*) + 1, count(*) FILTER (WHERE s.slots = 0)"
    "   INTO others, active, starved FROM loom_rl_slots s"
    "   WHERE s.provider = p_provider AND s.node <> p_node AND s.expires_ms > now_ms;"
    "  IF starved > 0 THEN"
    "   fair := greatest(p_limits[5] / active, 1);"
    "  ELSE"
    "   fair := p_limits[5];"
    "  END IF;"
    "  slots := least(greatest(p_slots, 0), greatest(fair, p_inflight),"
    "                 greatest(p_limits[5] - others, 0));"
    "  fill := least(slots, fair);"
    "  IF p_slots > 0 THEN"
    "   INSERT INTO loom_rl_slots (provider, node, slots, expires_ms)"
    "    VALUES (p_provider, p_node, slots, now_ms + (p_window_us + p_slack_us) / 1000)"
    "    ON CONFLICT (provider, node) DO UPDATE SET slots = excluded.slots,"
    "    expires_ms = excluded.expires_ms;"
    "  ELSE"
    "   DELETE FROM loom_rl_slots WHERE provider = p_provider AND node = p_node;"
    "  END IF;"
    " END IF;"
    "END $loom$;";
