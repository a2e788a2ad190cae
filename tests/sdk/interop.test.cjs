// Drives the Task Service with the official ExtraHorizon JavaScript SDK, unchanged.
// tests/sdk/test_sdk_interop.py starts the service and sets these variables:
//   EXH_HOST          base URL, e.g. http://localhost:8123 (the SDK uses hosts with "localhost" as given)
//   EXH_CLIENT_ID     OAuth2 client id
//   EXH_USERNAME      administrator email
//   EXH_PASSWORD      administrator password
//   EVENT_URL         test helper that publishes a POSTed event to the service's Kafka topic
//   FUNCTION_ZIP      path of a file with a base64 zip: handler.py (echo), api.py (API function), fail.py
'use strict';

const assert = require('node:assert/strict');
const { describe, it, before } = require('node:test');
const fs = require('node:fs');
const sdk = require('@extrahorizon/javascript-sdk');

const { createOAuth2Client, rqlBuilder } = sdk;
const host = process.env.EXH_HOST;
const clientId = process.env.EXH_CLIENT_ID;
const code = fs.readFileSync(process.env.FUNCTION_ZIP, 'utf8').trim();
const FN = 'sdk-echo';
const API_FN = 'sdk-api';
const FAIL_FN = 'sdk-fail';

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function waitFor(check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('ExtraHorizon SDK 8.14.1 against the Task Service', () => {
  let exh;
  let tokens;

  before(async () => {
    exh = createOAuth2Client({ host, clientId });
    tokens = await exh.auth.authenticate({ username: process.env.EXH_USERNAME, password: process.env.EXH_PASSWORD });
  });

  it('authenticates with the password grant', async () => {
    assert.ok(tokens.accessToken);
    assert.ok(tokens.refreshToken);
    assert.equal(typeof tokens.userId, 'string');
    assert.equal(await exh.raw.userId, tokens.userId);
  });

  it('rejects a wrong password with the OAuth2 error class', async () => {
    const other = createOAuth2Client({ host, clientId });
    await assert.rejects(other.auth.authenticate({ username: process.env.EXH_USERNAME, password: 'wrong' }),
      sdk.InvalidGrantError);
  });

  it('deploys functions', async () => {
    const created = await exh.tasks.functions.create({
      name: FN, description: 'echo', code, entryPoint: 'handler.handle', runtime: 'python3.11', timeLimit: 10,
      environmentVariables: { GREETING: { value: 'hello' } },
      executionOptions: { permissionMode: 'permissionRequired' },
    });
    assert.equal(created.name, FN);
    assert.deepEqual(created.environmentVariables, { GREETING: { value: 'hello' } });
    assert.ok(created.updateTimestamp instanceof Date);
    await exh.tasks.functions.create({ name: API_FN, code, entryPoint: 'api.handle', runtime: 'python3.11' });
    await exh.tasks.functions.create({ name: FAIL_FN, code, entryPoint: 'fail.handle', runtime: 'python3.11' });
    await assert.rejects(exh.tasks.functions.create({ name: FN, code, entryPoint: 'handler.handle', runtime: 'python3.11' }),
      sdk.ResourceAlreadyExistsError);
    await assert.rejects(exh.tasks.functions.create({ name: 'bad-code', code: 'bm90IGEgemlw', entryPoint: 'a.b', runtime: 'python3.11' }),
      sdk.InvalidFunctionCodeError);
    await assert.rejects(exh.tasks.functions.create({ name: 'bad-runtime', code, entryPoint: 'handler.handle', runtime: 'nodejs20.x' }),
      sdk.InvalidFunctionParameterError);
  });

  it('reads, updates, disables and enables functions', async () => {
    const list = await exh.tasks.functions.find();
    assert.deepEqual(list.data.map(item => item.name).sort(), [API_FN, FAIL_FN, FN].sort());
    const details = await exh.tasks.functions.getByName(FN);
    assert.equal(details.entryPoint, 'handler.handle');
    assert.deepEqual(details.environmentVariables, { GREETING: { value: 'hello' } });
    assert.deepEqual(await exh.tasks.functions.update(FN, { description: 'echoes', timeLimit: 12 }), { affectedRecords: 1 });
    assert.equal((await exh.tasks.functions.getByName(FN)).timeLimit, 12);
    assert.deepEqual(await exh.tasks.functions.disable(FN), { affectedRecords: 1 });
    assert.equal((await exh.tasks.functions.getByName(FN)).enabled, false);
    await assert.rejects(exh.tasks.create({ functionName: FN }), sdk.IllegalStateError);
    assert.deepEqual(await exh.tasks.functions.enable(FN), { affectedRecords: 1 });
    await assert.rejects(exh.tasks.functions.getByName('no-such-function'), sdk.ResourceUnknownError);
  });

  it('creates, finds and cancels tasks', async () => {
    const task = await exh.tasks.create({ functionName: FN, data: { camelCase: { nestedKey: 1 } }, tags: ['sdk'], priority: 3 });
    assert.equal(task.status, 'new');
    assert.deepEqual(task.data, { camelCase: { nestedKey: 1 } });
    assert.ok(task.creationTimestamp instanceof Date);
    const found = await exh.tasks.findById(task.id);
    assert.equal(found.id, task.id);
    const byRql = await exh.tasks.find({ rql: rqlBuilder().eq('functionName', FN).eq('tags', 'sdk').build() });
    assert.ok(byRql.data.some(item => item.id === task.id));
    assert.ok(byRql.page.total >= 1);
    const later = await exh.tasks.create({ functionName: FN, startTimestamp: new Date(Date.now() + 3600 * 1000) });
    assert.deepEqual(await exh.tasks.cancel(later.id), { affectedRecords: 1 });
    assert.equal((await exh.tasks.findById(later.id)).status, 'canceled');
    await assert.rejects(exh.tasks.cancel(later.id), sdk.IllegalStateError);
    await assert.rejects(exh.tasks.create({ functionName: 'no-such-function' }), sdk.ResourceUnknownError);
    await assert.rejects(exh.tasks.find({ rql: '?eq(functionName' }), sdk.InvalidRqlError);
    await assert.rejects(exh.tasks.cancel('not-an-id'), sdk.IDFormatError);
  });

  it('runs a task and reads its logs', async () => {
    const task = await exh.tasks.create({ functionName: FN, data: { n: 1 } });
    const done = await waitFor(async () => {
      const current = await exh.tasks.findById(task.id);
      return current.status === 'complete' && current;
    }, 'the task to complete');
    assert.equal(done.status, 'complete');
    const logs = await waitFor(async () => {
      try { return await exh.tasks.logs.find(task.id); } catch (error) {
        if (error instanceof sdk.NoTaskLogsFoundError) return null;
        throw error;
      }
    }, 'task logs');
    assert.ok(logs[0].message.includes('echo for'));
    assert.ok(logs[0].timestamp instanceof Date);
    const first = await exh.tasks.logs.findFirst(task.id, { rql: rqlBuilder().ge('timestamp', '2000-01-01T00:00:00.000Z').build() });
    assert.equal(first.message, logs[0].message);
  });

  it('walks every page with findAll', async () => {
    for (let i = 0; i < 55; i += 1) await exh.tasks.create({ functionName: FN, tags: ['bulk'], startTimestamp: new Date(Date.now() + 3600 * 1000) });
    const all = await exh.tasks.findAll({ rql: rqlBuilder().eq('tags', 'bulk').build() });
    assert.equal(all.length, 55);
    const sizes = [];
    for await (const page of exh.tasks.findAllIterator({ rql: rqlBuilder().eq('tags', 'bulk').build() })) {
      sizes.push(page.data.length);
    }
    assert.deepEqual(sizes, [50, 5]);
  });

  it('executes a function directly', async () => {
    const task = await exh.tasks.functions.execute(FN, { someKey: { innerKey: 'v' } });
    assert.equal(task.status, 'complete');
    assert.deepEqual(task.result.data, { someKey: { innerKey: 'v' } });
    assert.equal(task.result.greeting, 'hello');
    await assert.rejects(exh.tasks.functions.execute(FAIL_FN, {}), sdk.LambdaRuntimeError);
    await assert.rejects(exh.tasks.functions.execute('no-such-function', {}), sdk.ResourceUnknownError);
  });

  it('calls an API function and reads its request records', async () => {
    const got = await exh.tasks.api.get(API_FN, '/items/7?verbose=true');
    assert.equal(got.method, 'GET');
    assert.equal(got.rawPath, '/items/7');
    assert.equal(got.rawQueryString, '?verbose=true');
    assert.equal(got.user, tokens.userId);
    const posted = await exh.tasks.api.post(API_FN, 'items', { some_key: 1 });
    assert.deepEqual(JSON.parse(posted.body), { some_key: 1 });
    assert.equal((await exh.tasks.api.put(API_FN, '/items/7', { a: 1 })).method, 'PUT');
    assert.equal((await exh.tasks.api.patch(API_FN, '/items/7', { a: 1 })).method, 'PATCH');
    assert.equal((await exh.tasks.api.delete(API_FN, '/items/7')).method, 'DELETE');
    await assert.rejects(exh.tasks.api.get(API_FN, '/invalid'), sdk.InvalidApiFunctionResultError);
    const requests = await waitFor(async () => {
      const result = await exh.tasks.apiRequests.find({ rql: rqlBuilder().eq('functionName', API_FN).build() });
      return result.data.length >= 6 && result;
    }, 'API request records');
    const record = requests.data.find(item => item.path === '/items/7?verbose=true');
    assert.equal(record.statusCode, 200);
    const logs = await exh.tasks.apiRequests.logs.find(record.id);
    assert.ok(logs[0].message.includes('api GET /items/7'));
  });

  it('creates, lists and deletes schedules', async () => {
    const schedule = await exh.tasks.schedules.create({ functionName: FN, interval: 3600, data: { report: 'daily' },
      startTimestamp: new Date(Date.now() + 3600 * 1000) });
    assert.equal(schedule.interval, 3600);
    assert.ok(schedule.nextTimestamp instanceof Date);
    const found = await exh.tasks.schedules.find({ rql: rqlBuilder().eq('id', schedule.id).build() });
    assert.equal(found.data[0].functionName, FN);
    assert.deepEqual(found.data[0].data, { report: 'daily' });
    assert.deepEqual(await exh.tasks.schedules.remove(schedule.id), { affectedRecords: 1 });
    await assert.rejects(exh.tasks.schedules.remove(schedule.id), sdk.ResourceUnknownError);
  });

  it('manages dispatchers and actions, and an event then creates the task', async () => {
    const eventType = `sdk_event_${Date.now()}`;
    const dispatcher = await exh.dispatchers.create({
      eventType, name: `sdk-dispatcher-${Date.now()}`, description: 'interop',
      actions: [{ type: 'task', name: 'run-echo', functionName: FN, data: { fromDispatcher: true }, tags: ['dispatched'] }],
    });
    assert.equal(dispatcher.actions.length, 1);
    assert.deepEqual(dispatcher.actions[0].data, { fromDispatcher: true });
    const extra = await exh.dispatchers.actions.create(dispatcher.id, { type: 'task', name: 'second', functionName: FN });
    assert.deepEqual(await exh.dispatchers.actions.update(dispatcher.id, extra.id, { description: 'changed' }), { affectedRecords: 1 });
    assert.deepEqual(await exh.dispatchers.actions.remove(dispatcher.id, extra.id), { affectedRecords: 1 });
    assert.deepEqual(await exh.dispatchers.update(dispatcher.id, { description: 'updated' }), { affectedRecords: 1 });
    const found = await exh.dispatchers.findById(dispatcher.id);
    assert.equal(found.description, 'updated');
    assert.equal(found.actions.length, 1);

    const eventId = Date.now().toString(16).padStart(24, '0').slice(-24);
    const response = await fetch(process.env.EVENT_URL, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: eventId, type: eventType, content: { id: 'user-1' }, creation_timestamp: Date.now() }),
    });
    assert.equal(response.status, 204);
    const task = await waitFor(async () => {
      const result = await exh.tasks.find({ rql: rqlBuilder().eq('tags', 'dispatched').eq('status', 'complete').build() });
      return result.data[0];
    }, 'the dispatched task', 60000);
    assert.equal(task.data.fromDispatcher, true);
    assert.equal(task.data.event.type, eventType);
    assert.deepEqual(await exh.dispatchers.remove(dispatcher.id), { affectedRecords: 1 });
  });

  it('works with tokens handed over directly and refreshes an unknown access token', async () => {
    const direct = createOAuth2Client({ host, clientId, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken });
    const page = await direct.tasks.find({ rql: rqlBuilder().limit(1).build() });
    assert.equal(page.data.length, 1);
    let refreshed = null;
    const stale = createOAuth2Client({ host, clientId, accessToken: 'unknown-access-token', refreshToken: tokens.refreshToken,
      freshTokensCallback: data => { refreshed = data; } });
    const result = await stale.tasks.find({ rql: rqlBuilder().limit(1).build() });
    assert.equal(result.data.length, 1);
    assert.ok(refreshed);
    assert.notEqual(refreshed.accessToken, tokens.accessToken);
  });

  it('deletes a function and keeps its tasks', async () => {
    assert.deepEqual(await exh.tasks.functions.remove(FAIL_FN), { affectedRecords: 1 });
    await assert.rejects(exh.tasks.functions.remove(FAIL_FN), sdk.ResourceUnknownError);
    const failed = await exh.tasks.find({ rql: rqlBuilder().eq('functionName', FAIL_FN).build() });
    assert.ok(failed.data.length >= 1);
  });
});
