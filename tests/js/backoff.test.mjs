// Backoff: ceilings, full-jitter bounds with an injected random, argument checks.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../trioconn/js/trioconn.js";

test("the defaults are base 500 ms, factor 2, cap 30 s, unlimited attempts", () => {
  const backoff = new Backoff();
  assert.deepEqual({ ...backoff }, { base: 500, factor: 2, cap: 30000, maxAttempts: null });
  assert.ok(Object.isFrozen(backoff));
});

test("the ceiling doubles from base and stops at cap", () => {
  const backoff = new Backoff();
  const ceilings = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoff.ceiling(n));
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.equal(backoff.ceiling(10_000), 30000); // no overflow to Infinity or NaN
  assert.equal(new Backoff({ base: 100, factor: 1, cap: 100 }).ceiling(50), 100);
  assert.equal(new Backoff({ base: 100, factor: 3, cap: 1000 }).ceiling(3), 900);
});

test("the delay is uniform in [0, ceiling]: random() scales the ceiling", () => {
  const backoff = new Backoff({ base: 200, factor: 2, cap: 1000 });
  assert.equal(backoff.delay(1, () => 0), 0);
  assert.equal(backoff.delay(1, () => 0.5), 100);
  assert.equal(backoff.delay(2, () => 0.999), 399.6);
  assert.equal(backoff.delay(9, () => 1), 1000);
});

test("the delays stay within the ceilings with the real Math.random", () => {
  const backoff = new Backoff({ base: 10, factor: 2, cap: 100 });
  for (let n = 1; n <= 10; n++) {
    for (let i = 0; i < 100; i++) {
      const delay = backoff.delay(n);
      assert.ok(delay >= 0 && delay <= backoff.ceiling(n), `delay(${n}) = ${delay}`);
    }
  }
});

test("maxAttempts is kept", () => {
  assert.equal(new Backoff({ maxAttempts: 3 }).maxAttempts, 3);
  assert.equal(new Backoff({ maxAttempts: null }).maxAttempts, null);
});

test("bad arguments are refused with an error naming the argument", () => {
  const cases = [
    [{ base: "1" }, TypeError, /base must be a number/],
    [{ base: 0 }, RangeError, /base must be a finite number > 0/],
    [{ base: -1 }, RangeError, /base/],
    [{ base: NaN }, RangeError, /base/],
    [{ factor: Infinity }, RangeError, /factor/],
    [{ factor: 0.5 }, RangeError, /factor must be >= 1/],
    [{ cap: 100, base: 200 }, RangeError, /cap \(100\) must be >= base \(200\)/],
    [{ maxAttempts: 0 }, RangeError, /maxAttempts must be >= 1/],
    [{ maxAttempts: 1.5 }, TypeError, /maxAttempts must be an integer/],
    [{ maxAttempts: "3" }, TypeError, /maxAttempts/],
    [{ bse: 1 }, TypeError, /unknown option "bse"/],
  ];
  for (const [options, Type, message] of cases) {
    assert.throws(() => new Backoff(options), (exc) => exc instanceof Type && message.test(exc.message), JSON.stringify(options));
  }
  assert.throws(() => new Backoff(null), TypeError);
  const backoff = new Backoff();
  assert.throws(() => backoff.ceiling(0), { name: "RangeError", message: /failures must be >= 1/ });
  assert.throws(() => backoff.ceiling(1.5), { name: "TypeError", message: /failures must be an integer/ });
  assert.throws(() => backoff.delay(1, "x"), { name: "TypeError", message: /random must be a function/ });
  assert.throws(() => backoff.delay(1, () => 2), { name: "RangeError", message: /random\(\) must return/ });
  assert.throws(() => backoff.delay(1, () => NaN), { name: "RangeError" });
});
