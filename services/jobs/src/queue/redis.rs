//! The Redis Streams queue.
//!
//! Keys (all under the configured prefix): `queue:p<class>` (one stream per priority class,
//! read by the consumer group `workers`), `queue:delayed` (a sorted set of retries by due time),
//! `queue:index` (job id → its newest entry, so the reconciler can find jobs the queue lost)
//! and `queue:dead` (the dead-letter stream).
//!
//! A claim is one Lua script, so it is atomic and costs one round trip: promote due retries,
//! reclaim (`XAUTOCLAIM`) an entry idle past the visibility timeout (or dead-letter it after too
//! many deliveries), else read (`XREADGROUP`) one new entry in weighted priority order. When
//! nothing is there, the claimer waits with a blocking `XREAD` on its own connection from the
//! streams' last ids, which wakes it as soon as anything is added without consuming it.
//!
//! Every call goes through [`easel_runtime::redis::Redis`]: a deadline per call and a circuit
//! breaker, so while Redis is down an enqueue fails at once (the job is in the database; the
//! reconciler enqueues it when Redis is back) and claims fail at once (workers back off).

use std::sync::Mutex;
use std::time::Duration;

use easel_runtime::redis::{BreakerState, Redis, RedisConfig};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};

use super::{
    Delivery, JobQueue, PRIORITY_CLASSES, QueueError, QueueMessage, QueueSettings, WeightedOrder,
};

const GROUP: &str = "workers";
/// The longest a claim blocks on one `XREAD` before it looks again for due retries and idle
/// entries (which add nothing to the streams to wake it).
const LONGEST_BLOCK: Duration = Duration::from_secs(1);

const CLAIM: &str = r"
local group, consumer = ARGV[1], ARGV[2]
local now = tonumber(ARGV[3])
local min_idle = ARGV[4]
local max_deliveries = tonumber(ARGV[5])
local n = #KEYS - 3
local function stream(class) return KEYS[4 + class] end
for class = 0, n - 1 do
  redis.pcall('XGROUP', 'CREATE', stream(class), group, '0', 'MKSTREAM')
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  local class = tonumber(string.sub(member, 1, a - 1))
  local job = string.sub(member, a + 1, b - 1)
  local id = redis.call('XADD', stream(class), '*', 'm', string.sub(member, b + 1))
  redis.call('HSET', KEYS[2], job, id)
  redis.call('ZREM', KEYS[1], member)
end
local cursors = {}
for class = 0, n - 1 do cursors[class + 1] = ARGV[7 + class] end
local function reply(kind, class, id, body, count, extra)
  local out = {kind, class, id, body, count}
  for i = 1, n do out[#out + 1] = cursors[i] end
  if extra then for i = 1, #extra do out[#out + 1] = extra[i] end end
  return out
end
for class = n - 1, 0, -1 do
  for _ = 1, 10 do
    local claimed = redis.call('XAUTOCLAIM', stream(class), group, consumer, min_idle, cursors[class + 1], 'COUNT', 1)
    cursors[class + 1] = claimed[1]
    local entry = claimed[2][1]
    if not entry then break end
    local id, body = entry[1], entry[2][2]
    local pending = redis.call('XPENDING', stream(class), group, id, id, 1)
    local count = pending[1][4]
    if count <= max_deliveries then
      return reply('reclaimed', class, id, body, count)
    end
    redis.call('XADD', KEYS[3], '*', 'm', body, 'reason', 'max deliveries exceeded')
    redis.call('XACK', stream(class), group, id)
    redis.call('XDEL', stream(class), id)
    local job = cjson.decode(body)['job_id']
    if job and redis.call('HGET', KEYS[2], job) == id then redis.call('HDEL', KEYS[2], job) end
  end
end
for token in string.gmatch(ARGV[6], '%d+') do
  local class = tonumber(token)
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', stream(class), '>')
  if read then
    local entry = read[1][2][1]
    return reply('new', class, entry[1], entry[2][2], 1)
  end
end
local last = {}
for class = 0, n - 1 do
  local id = '0-0'
  local info = redis.pcall('XINFO', 'STREAM', stream(class))
  if type(info) == 'table' and not info.err then
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then id = info[i + 1] end
    end
  end
  last[#last + 1] = id
end
return reply('none', -1, '', '', 0, last)
";

const ENQUEUE: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], id)
return id
";

/// `XPENDING` names the consumer group as [`GROUP`] does.
const ENQUEUE_MANY: &str = r"
for i = 1, #ARGV, 3 do
  local id = redis.call('XADD', KEYS[2 + tonumber(ARGV[i])], '*', 'm', ARGV[i + 2])
  redis.call('HSET', KEYS[1], ARGV[i + 1], id)
end
local waiting = {}
for class = 0, #KEYS - 2 do
  local stream = KEYS[2 + class]
  local delivered = 0
  local summary = redis.pcall('XPENDING', stream, 'workers')
  if type(summary) == 'table' and not summary.err then delivered = summary[1] end
  waiting[#waiting + 1] = redis.call('XLEN', stream) - delivered
end
return waiting
";

const ACK: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
return 1
";

/// The Redis Streams queue.
#[derive(Debug)]
pub struct RedisQueue {
    redis: Redis,
    /// Connections for blocking reads, one per concurrent claimer.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    prefix: String,
    settings: QueueSettings,
    order: WeightedOrder,
    cursors: Mutex<Vec<String>>,
    claim: Script,
    enqueue: Script,
    enqueue_many: Script,
    ack: Script,
}

impl RedisQueue {
    /// Connects with the default deadlines; every key starts with `prefix`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        settings: QueueSettings,
    ) -> Result<RedisQueue, QueueError> {
        let redis =
            Redis::connect("jobs", url, RedisConfig::new(Duration::from_millis(250))).await?;
        Ok(RedisQueue::new(redis, prefix, settings))
    }

    /// A queue on `redis`; every key starts with `prefix`.
    pub fn new(redis: Redis, prefix: &str, settings: QueueSettings) -> RedisQueue {
        RedisQueue {
            redis,
            blocking: Mutex::new(Vec::new()),
            prefix: prefix.to_string(),
            settings,
            order: WeightedOrder::default(),
            cursors: Mutex::new(vec!["0-0".to_string(); PRIORITY_CLASSES]),
            claim: Script::new(CLAIM),
            enqueue: Script::new(ENQUEUE),
            enqueue_many: Script::new(ENQUEUE_MANY),
            ack: Script::new(ACK),
        }
    }

    fn stream(&self, class: usize) -> String {
        format!("{}queue:p{class}", self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}queue:{name}", self.prefix)
    }

    fn class_of(&self, delivery: &Delivery) -> Result<(usize, String), QueueError> {
        let (class, id) = delivery
            .id
            .split_once('/')
            .ok_or_else(|| QueueError::Malformed(format!("entry id {:?}", delivery.id)))?;
        let class = class
            .parse::<usize>()
            .ok()
            .filter(|class| *class < PRIORITY_CLASSES)
            .ok_or_else(|| QueueError::Malformed(format!("entry id {:?}", delivery.id)))?;
        Ok((class, id.to_string()))
    }

    async fn run_claim(&self, consumer: &str) -> Result<ClaimReply, QueueError> {
        let order = self
            .order
            .next()
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let cursors = self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.key("delayed"))
            .key(self.key("index"))
            .key(self.key("dead"));
        for class in 0..PRIORITY_CLASSES {
            invocation.key(self.stream(class));
        }
        invocation
            .arg(GROUP)
            .arg(consumer)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(u64::try_from(self.settings.visibility_timeout.as_millis()).unwrap_or(u64::MAX))
            .arg(self.settings.max_deliveries)
            .arg(order);
        for cursor in &cursors {
            invocation.arg(cursor);
        }
        let invocation = &invocation;
        let values: Vec<Value> = self
            .redis
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let reply = ClaimReply::parse(&values)?;
        *self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reply.cursors.clone();
        Ok(reply)
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(connection) = pooled {
            return Ok(connection);
        }
        // No new connection while Redis is known to be down.
        self.redis.admit()?;
        let timeouts = self.redis.config();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect_timeout))
            // Pooled connections serve later claims too: size the deadline for the longest
            // block any claim asks for, not this one's.
            .set_response_timeout(Some(LONGEST_BLOCK + timeouts.command_timeout));
        Ok(self
            .redis
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Waits until any stream gets an entry newer than `last`, or `block` passes.
    async fn wait_for_entries(&self, last: &[String], block: Duration) -> Result<(), QueueError> {
        let mut connection = self.blocking_connection().await?;
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS");
        for class in 0..PRIORITY_CLASSES {
            command.arg(self.stream(class));
        }
        for id in last {
            command.arg(id);
        }
        let result: Result<Value, _> = command.query_async(&mut connection).await;
        // A failed connection is dropped; a healthy one goes back for the next claim.
        if result.is_ok() {
            self.blocking
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(connection);
        }
        result.map(|_| ()).map_err(QueueError::from)
    }
}

fn encode(message: &QueueMessage) -> Result<String, QueueError> {
    serde_json::to_string(message).map_err(|error| QueueError::Malformed(error.to_string()))
}

fn decode(body: &str) -> Result<QueueMessage, QueueError> {
    serde_json::from_str(body).map_err(|error| QueueError::Malformed(error.to_string()))
}

/// The claim script's answer.
#[derive(Debug)]
struct ClaimReply {
    delivery: Option<(usize, String, String, u32)>,
    cursors: Vec<String>,
    last_ids: Vec<String>,
}

impl ClaimReply {
    fn parse(values: &[Value]) -> Result<ClaimReply, QueueError> {
        let text = |index: usize| -> Result<String, QueueError> {
            match values.get(index) {
                Some(Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
                Some(Value::SimpleString(text)) => Ok(text.clone()),
                Some(Value::Int(number)) => Ok(number.to_string()),
                other => Err(QueueError::Malformed(format!(
                    "claim reply item {index}: {other:?}"
                ))),
            }
        };
        let kind = text(0)?;
        let class = text(1)?.parse::<i64>().unwrap_or(-1);
        let cursors = (0..PRIORITY_CLASSES)
            .map(|i| text(5 + i))
            .collect::<Result<Vec<_>, _>>()?;
        let delivery = if kind == "none" {
            None
        } else {
            let class = usize::try_from(class)
                .map_err(|_| QueueError::Malformed(format!("class {class}")))?;
            let count = text(4)?.parse::<u32>().unwrap_or(1);
            Some((class, text(2)?, text(3)?, count))
        };
        let last_ids = if delivery.is_none() {
            (0..PRIORITY_CLASSES)
                .map(|i| text(5 + PRIORITY_CLASSES + i))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(ClaimReply {
            delivery,
            cursors,
            last_ids,
        })
    }
}

#[async_trait::async_trait]
impl JobQueue for RedisQueue {
    async fn enqueue(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        let class = usize::from(message.priority).min(PRIORITY_CLASSES - 1);
        let body = &encode(message)?;
        if delay.is_zero() {
            let (stream, index) = (&self.stream(class), &self.key("index"));
            let script = &self.enqueue;
            let _: String = self
                .redis
                .run(|mut connection| async move {
                    script
                        .key(stream)
                        .key(index)
                        .arg(body)
                        .arg(&message.job_id)
                        .invoke_async(&mut connection)
                        .await
                })
                .await?;
        } else {
            let due = chrono::Utc::now().timestamp_millis()
                + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
            let member = &format!("{class}|{}|{body}", message.job_id);
            let (delayed, index) = (&self.key("delayed"), &self.key("index"));
            let _: () = self
                .redis
                .run(|mut connection| async move {
                    redis::pipe()
                        .atomic()
                        .zadd(delayed, member, due)
                        .ignore()
                        .hset(index, &message.job_id, "delayed")
                        .ignore()
                        .query_async(&mut connection)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    async fn enqueue_many(&self, messages: &[QueueMessage]) -> Result<Vec<u64>, QueueError> {
        if messages.is_empty() {
            return self.depth().await;
        }
        let mut invocation = self.enqueue_many.prepare_invoke();
        invocation.key(self.key("index"));
        for class in 0..PRIORITY_CLASSES {
            invocation.key(self.stream(class));
        }
        for message in messages {
            let class = usize::from(message.priority).min(PRIORITY_CLASSES - 1);
            invocation
                .arg(class)
                .arg(&message.job_id)
                .arg(encode(message)?);
        }
        let invocation = &invocation;
        let waiting: Vec<i64> = self
            .redis
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Ok(waiting
            .into_iter()
            .map(|count| u64::try_from(count).unwrap_or_default())
            .collect())
    }

    async fn claim(&self, consumer: &str, block: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let reply = self.run_claim(consumer).await?;
            if let Some((class, id, body, deliveries)) = reply.delivery {
                return Ok(Some(Delivery {
                    id: format!("{class}/{id}"),
                    message: decode(&body)?,
                    deliveries,
                }));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wake early for due retries and idle entries, which add nothing to the streams.
            let wait = (deadline - now)
                .min(self.settings.visibility_timeout / 2)
                .min(LONGEST_BLOCK);
            self.wait_for_entries(&reply.last_ids, wait).await?;
        }
    }

    async fn touch(&self, consumer: &str, delivery: &Delivery) -> Result<(), QueueError> {
        let (class, id) = self.class_of(delivery)?;
        let command = &redis::cmd("XCLAIM")
            .arg(self.stream(class))
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .clone();
        let _: Value = self
            .redis
            .run(|mut connection| async move { command.query_async(&mut connection).await })
            .await?;
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let (class, id) = self.class_of(delivery)?;
        let (stream, index, id) = (&self.stream(class), &self.key("index"), &id);
        let script = &self.ack;
        let _: i64 = self
            .redis
            .run(|mut connection| async move {
                script
                    .key(stream)
                    .key(index)
                    .arg(GROUP)
                    .arg(id)
                    .arg(&delivery.message.job_id)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let command = &redis::cmd("XADD")
            .arg(self.key("dead"))
            .arg("*")
            .arg("m")
            .arg(encode(&delivery.message)?)
            .arg("reason")
            .arg(reason)
            .clone();
        let _: String = self
            .redis
            .run(|mut connection| async move { command.query_async(&mut connection).await })
            .await?;
        self.ack(delivery).await
    }

    async fn contains(&self, job_ids: &[String]) -> Result<Vec<bool>, QueueError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let command = &redis::cmd("HMGET")
            .arg(self.key("index"))
            .arg(job_ids)
            .clone();
        let found: Vec<Option<String>> = self
            .redis
            .run(|mut connection| async move { command.query_async(&mut connection).await })
            .await?;
        Ok(found.into_iter().map(|entry| entry.is_some()).collect())
    }

    async fn depth(&self) -> Result<Vec<u64>, QueueError> {
        let (delayed, lengths, pending): (Vec<String>, Vec<u64>, Vec<Value>) = self
            .redis
            .run(|mut connection| async move {
                let delayed: Vec<String> = redis::cmd("ZRANGE")
                    .arg(self.key("delayed"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut connection)
                    .await?;
                let mut lengths = Vec::with_capacity(PRIORITY_CLASSES);
                let mut pending = Vec::with_capacity(PRIORITY_CLASSES);
                for class in 0..PRIORITY_CLASSES {
                    lengths.push(
                        redis::cmd("XLEN")
                            .arg(self.stream(class))
                            .query_async::<u64>(&mut connection)
                            .await?,
                    );
                    // No group yet (nothing was ever claimed): nothing is pending.
                    pending.push(
                        redis::cmd("XPENDING")
                            .arg(self.stream(class))
                            .arg(GROUP)
                            .query_async::<Value>(&mut connection)
                            .await
                            .unwrap_or(Value::Nil),
                    );
                }
                Ok((delayed, lengths, pending))
            })
            .await?;
        let mut depth = Vec::with_capacity(PRIORITY_CLASSES);
        for (class, (length, pending)) in lengths.into_iter().zip(pending).enumerate() {
            let pending = match pending {
                Value::Array(items) => match items.first() {
                    Some(Value::Int(count)) => u64::try_from(*count).unwrap_or_default(),
                    _ => 0,
                },
                _ => 0,
            };
            let waiting = delayed
                .iter()
                .filter(|member| member.starts_with(&format!("{class}|")))
                .count() as u64;
            depth.push(length.saturating_sub(pending) + waiting);
        }
        Ok(depth)
    }

    async fn dead_letters(&self) -> Result<Vec<(QueueMessage, String)>, QueueError> {
        let command = &redis::cmd("XRANGE")
            .arg(self.key("dead"))
            .arg("-")
            .arg("+")
            .clone();
        let entries: redis::streams::StreamRangeReply = self
            .redis
            .run(|mut connection| async move { command.query_async(&mut connection).await })
            .await?;
        entries
            .ids
            .iter()
            .map(|entry| {
                let body: String = entry.get("m").unwrap_or_default();
                let reason: String = entry.get("reason").unwrap_or_default();
                Ok((decode(&body)?, reason))
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(self.redis.ping().await?)
    }

    async fn recovered(&self) {
        let mut state = self.redis.watch_state();
        // Ok: a state was seen; Err: the handle is gone, and nothing recovers then.
        if state
            .wait_for(|state| *state != BreakerState::Closed)
            .await
            .is_err()
            || state
                .wait_for(|state| *state == BreakerState::Closed)
                .await
                .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}
