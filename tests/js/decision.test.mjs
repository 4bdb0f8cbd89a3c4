// The close-code table and decide(), tested against the Python source of truth.
// tests/test_js.py writes trioconn._core.decision.decision_table() and Python's decide() outcomes
// over scripted sequences of ends to the JSON file named by TRIOCONN_DECISION_TABLE.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { Backoff, CLOSE_CODES, closeAction, decide } from "../../trioconn/js/trioconn.js";

const path = process.env.TRIOCONN_DECISION_TABLE;
const skip = path ? false : "TRIOCONN_DECISION_TABLE is not set: run these through pytest tests/test_js.py";
const data = path ? JSON.parse(readFileSync(path, "utf8")) : null;

const FRESH = Object.freeze({ attempts: 1, failures: 0, reauthUsed: false });

function options(extra = {}) {
  return { backoff: new Backoff(), random: () => 0.5, minUptime: 10000, hasTokenProvider: false, ...extra };
}

describe("against decision_table()", { skip }, () => {
  test("the table rows are CLOSE_CODES", () => {
    const rows = Object.fromEntries(data.table.close_codes.map(({ code, ...row }) => [code, row]));
    assert.deepEqual(JSON.parse(JSON.stringify(CLOSE_CODES)), rows);
  });

  test("every code from 1000 to 4999 gets the table's action", () => {
    const expected = new Map(data.table.close_codes.map((row) => [row.code, row.action]));
    for (const range of data.table.unlisted_close_codes) {
      for (let code = range.from; code <= range.to; code++) expected.set(code, range.action);
    }
    assert.equal(expected.size, 4000);
    for (let code = 1000; code <= 4999; code++) {
      assert.equal(closeAction(code), expected.get(code), `code ${code}`);
    }
  });

  test("every end without a code gets the table's action", () => {
    const kinds = Object.keys(data.table.ends).sort();
    assert.deepEqual(kinds, ["broken", "certificate", "protocol-error", "timeout"]);
    for (const kind of kinds) {
      const decision = decide({ kind, uptime: null }, FRESH, options());
      assert.equal(decision.action, data.table.ends[kind], kind);
    }
  });

  test("the reauth rule: fail without a token getter, once with one", () => {
    assert.equal(data.table.reauth.without_token_provider, "fail");
    assert.equal(decide({ kind: "closed", code: 4401 }, FRESH, options()).action, "fail");
    const first = decide({ kind: "closed", code: 4401 }, FRESH, options({ hasTokenProvider: true }));
    assert.deepEqual(first, { action: "reauth", delay: 0, tally: { ...FRESH, reauthUsed: true }, exhausted: false });
    const second = decide({ kind: "closed", code: 4401 }, first.tally, options({ hasTokenProvider: true }));
    assert.equal(second.action, "fail");
  });

  test("decide() takes Python's decisions over every code and 400 sequences of ends", () => {
    let steps = 0;
    for (const scenario of data.scenarios) {
      const b = scenario.backoff;
      const backoff = new Backoff({ base: b.base * 1000, factor: b.factor, cap: b.cap * 1000, maxAttempts: b.maxAttempts });
      let drawn = 0;
      const random = () => data.randoms[drawn++ % data.randoms.length];
      let tally = FRESH;
      for (const step of scenario.steps) {
        const end = { ...step.end, uptime: step.end.uptime === null ? null : step.end.uptime * 1000 };
        const decision = decide(end, tally, {
          backoff,
          random,
          minUptime: scenario.minUptime * 1000,
          hasTokenProvider: scenario.hasTokenProvider,
          overrides: scenario.overrides,
        });
        const where = JSON.stringify({ scenario: { ...scenario, steps: undefined }, step });
        assert.equal(decision.action, step.action, where);
        assert.deepEqual(decision.tally, step.tally, where);
        assert.equal(decision.exhausted, step.exhausted, where);
        assert.ok(Math.abs(decision.delay - step.delay * 1000) < 1e-6, `${where}: delay ${decision.delay}`);
        tally = decision.tally;
        steps += 1;
      }
    }
    assert.ok(steps > 8000, `only ${steps} steps compared`);
  });
});

describe("decide() on its own", () => {
  test("a healthy link resets the count, so maxAttempts reconnects follow its loss", () => {
    const backoff = new Backoff({ maxAttempts: 2 });
    const opts = options({ backoff });
    let tally = FRESH;
    let d = decide({ kind: "broken", uptime: 60000 }, tally, opts); // healthy link lost
    assert.equal(d.action, "reconnect");
    assert.deepEqual(d.tally, { attempts: 1, failures: 1, reauthUsed: false });
    d = decide({ kind: "broken", uptime: null }, (tally = d.tally), opts);
    assert.equal(d.action, "reconnect");
    d = decide({ kind: "broken", uptime: null }, (tally = d.tally), opts);
    assert.deepEqual([d.action, d.exhausted], ["fail", true]);
    void tally;
  });

  test("a link shorter than minUptime counts as a failure and the ceiling grows", () => {
    const opts = options({ random: () => 1 });
    const d1 = decide({ kind: "broken", uptime: 9999 }, FRESH, opts);
    const d2 = decide({ kind: "broken", uptime: 9999 }, d1.tally, opts);
    assert.deepEqual([d1.delay, d2.delay], [500, 1000]);
  });

  test("the first attempt of a client counts: maxAttempts 1 means one attempt", () => {
    const d = decide({ kind: "timeout", uptime: null }, FRESH, options({ backoff: new Backoff({ maxAttempts: 1 }) }));
    assert.deepEqual([d.action, d.exhausted], ["fail", true]);
  });

  test("overrides win over the table", () => {
    assert.equal(closeAction(4403, { 4403: "reconnect" }), "reconnect");
    assert.equal(closeAction(1000, new Map([[1000, "fail"]])), "fail");
    const d = decide({ kind: "closed", code: 4403 }, FRESH, options({ overrides: { 4403: "reconnect" } }));
    assert.equal(d.action, "reconnect");
  });

  test("bad arguments are refused", () => {
    assert.throws(() => closeAction("1000"), { name: "TypeError", message: /code must be an integer/ });
    assert.throws(() => closeAction(1000, { 999: "done" }), { name: "RangeError", message: /closeCodes: close code 999/ });
    assert.throws(() => closeAction(1000, { 1000: "later" }), { name: "TypeError", message: /closeCodes\[1000\] must be one of/ });
    assert.throws(() => decide({ kind: "closed" }, FRESH, options()), { name: "TypeError", message: /end.code/ });
    assert.throws(() => decide({ kind: "gone" }, FRESH, options()), { name: "TypeError", message: /end must be/ });
    assert.throws(() => decide({ kind: "broken" }, null, options()), { name: "TypeError", message: /tally/ });
    assert.throws(() => decide({ kind: "broken" }, FRESH, {}), { name: "TypeError", message: /backoff/ });
    assert.throws(() => decide({ kind: "broken" }, FRESH, options({ minUptime: -1 })), { name: "RangeError", message: /minUptime/ });
  });
});
