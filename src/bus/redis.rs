//! The bus on Redis, the way Centrifugo uses it: a Lua script sequences each event
//! (INCR the room's seq, append to its capped history list, PUBLISH), so the seq, the
//! history and the delivery order are decided in one place, atomically. Every node
//! PSUBSCRIBEs to all rooms' channels and keeps the rooms it serves.
//!
//! Keys, under the cluster's name `C`: `C:room:R:{epoch,seq,history}` (expire a day
//! after the room's last event), `C:room:R:viewers` (node -> count:expiry),
//! `C:room:R:{top,names}` (leaderboard), `C:room:R:video` (the video host's URL, kept
//! alive by that node, expiring as presence does), `C:room:R:live` (set while the last
//! `stream` event said live: with no host claiming the video, it was a dead node's). Channels: `C:events:R`, payload `EPOCH SEQ LIVE FRAME`, and
//! `C:users:U`, payload the private event's frame, and `C:flash:R`, payload an
//! ephemeral room event's frame. `C:room:R:likes:{total,recent,gate}` count likes.
//! `C:nodes` holds each node's load (url -> `EXPIRY JSON`) for placing WHEP viewers.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, ScriptInvocation};

use super::{Bus, BusError, BusMessage, NodeLoad, RoomMessage, Snapshot};
use crate::protocol::{LeaderEntry, UnsequencedEvent, UserRef};

/// A room's history outlives its last event by this long.
/// The least time between two `likes` events of a room.
const LIKES_EVERY_MS: u64 = 1000;

const HISTORY_TTL_S: u64 = 24 * 3600;
/// Commands that take longer fail, so no client waits on a dead Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a script on a room's KEYS[1..3] (epoch, seq, history): the epoch, created
/// from `$fresh` (an ARGV) with an empty history if the room has none.
macro_rules! room_epoch {
    ($fresh:literal) => {
        concat!(
            "local epoch = redis.call('GET', KEYS[1])\n",
            "if not epoch then\n",
            "  epoch = ",
            $fresh,
            "\n  redis.call('SET', KEYS[1], epoch)\n",
            "  redis.call('DEL', KEYS[2], KEYS[3])\n",
            "end\n"
        )
    };
}

/// Sequences and publishes one event (after `room_epoch!`): KEYS[4] marks the room's
/// video as live while the last `stream` event said so. ARGV[8], when not empty, is
/// the id of a chat message, question or answer this event deletes: its place in the
/// history is left empty (the needle matches only an event's own top-level id, which
/// is followed by its type).
macro_rules! publish_event {
    () => {
        r#"if ARGV[8] ~= '' then
  local needle = '"id":"' .. ARGV[8] .. '","type":"'
  for i, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    if string.find(e, needle, 1, true) and not string.find(e, '"type":"deleted"', 1, true) then
      redis.call('LSET', KEYS[3], i - 1, '')
    end
  end
end
local seq = redis.call('INCR', KEYS[2])
local frame = ARGV[2] .. seq .. ARGV[3]
redis.call('RPUSH', KEYS[3], frame)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[6])
elseif ARGV[7] == '0' then
  redis.call('DEL', KEYS[4])
end
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. seq .. ' ' .. ARGV[7] .. ' ' .. frame)
return seq
"#
    };
}

const PUBLISH: &str = concat!(room_epoch!("ARGV[5]"), publish_event!());

/// Publishes the end of a video marked live that no node claims any more (its node
/// died): once, whichever nodes notice. 0 when there is nothing to end.
const END_ORPHANED_VIDEO: &str = concat!(
    "if redis.call('EXISTS', KEYS[5]) == 1 or redis.call('EXISTS', KEYS[4]) == 0 then\n",
    "  return 0\n",
    "end\n",
    room_epoch!("ARGV[5]"),
    publish_event!()
);

const SNAPSHOT: &str = concat!(
    room_epoch!("ARGV[1]"),
    r#"for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
local seq = redis.call('GET', KEYS[2]) or '0'
return {epoch, seq, redis.call('EXISTS', KEYS[4]), redis.call('LRANGE', KEYS[3], 0, -1)}
"#
);

const PRESENCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local totals = {}
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[1], ARGV[i + 2] .. ':' .. (now + tonumber(ARGV[2])))
  local total = 0
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    local count, expires = string.match(all[j + 1], '^(%d+):(%d+)$')
    if count and tonumber(expires) > now then
      total = total + tonumber(count)
    else
      redis.call('HDEL', key, all[j])
    end
  end
  redis.call('PEXPIRE', key, ARGV[2])
  totals[i] = total
end
return totals
"#;

/// KEYS: the nodes' loads (url -> `expiry json`); ARGV: this node's url, its load as
/// JSON, the time it lasts (ms). Records it, drops expired ones, answers the rest.
const REPORT_LOAD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
local loads = {}
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local expires, load = string.match(all[j + 1], '^(%d+) (.*)$')
  if expires and tonumber(expires) > now then
    loads[#loads + 1] = load
  else
    redis.call('HDEL', KEYS[1], all[j])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return loads
"#;

/// KEYS: total, recent, gate; ARGV: taps, the gate's time (ms). Counts the taps;
/// when the gate opens (once per its time), takes the recent taps and answers them
/// with the total; `{total, 0}` when no taps wait, nil while the gate is shut.
const LIKES: &str = r#"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
local recent = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
if recent == 0 then
  return {total, 0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
redis.call('SET', KEYS[2], 0)
return {total, recent}
"#;

const LEADERBOARDS: &str = r#"
local boards = {}
for i = 1, #KEYS, 2 do
  local top = redis.call('ZREVRANGE', KEYS[i], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
  local board = {}
  for j = 1, #top, 2 do
    board[#board + 1] = top[j]
    board[#board + 1] = redis.call('HGET', KEYS[i + 1], top[j]) or top[j]
    board[#board + 1] = top[j + 1]
  end
  boards[#boards + 1] = board
end
return boards
"#;

const HOST_VIDEO: &str = r#"
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
return 0
"#;

/// Drops the claim and the live mark together, so that no node takes the stop (whose
/// `stream` event follows) for a dead host's video.
const STOP_HOSTING_VIDEO: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"#;

pub struct RedisBus {
    client: Client,
    commands: ConnectionManager,
    cluster: String,
    history_len: usize,
    presence_ttl_ms: u64,
    publish: Script,
    end_orphaned_video: Script,
    snapshot: Script,
    presence: Script,
    leaderboards: Script,
    host_video: Script,
    stop_hosting_video: Script,
    likes: Script,
    report_load: Script,
}

impl RedisBus {
    /// Connects (failing now if Redis is unreachable, so a misconfigured node does not
    /// start). `cluster` namespaces keys and channels: nodes with the same name share
    /// rooms.
    pub async fn connect(
        url: &str,
        cluster: &str,
        history_len: usize,
        presence_ttl_ms: u64,
    ) -> Result<RedisBus, BusError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let commands = client.get_connection_manager_with_config(config).await?;
        Ok(RedisBus {
            client,
            commands,
            cluster: cluster.to_owned(),
            history_len,
            presence_ttl_ms,
            publish: Script::new(PUBLISH),
            end_orphaned_video: Script::new(END_ORPHANED_VIDEO),
            snapshot: Script::new(SNAPSHOT),
            presence: Script::new(PRESENCE),
            leaderboards: Script::new(LEADERBOARDS),
            host_video: Script::new(HOST_VIDEO),
            stop_hosting_video: Script::new(STOP_HOSTING_VIDEO),
            likes: Script::new(LIKES),
            report_load: Script::new(REPORT_LOAD),
        })
    }

    /// An invocation of a script that publishes (`publish_event!`), with its keys and
    /// arguments.
    fn publishing<'a>(
        &self,
        script: &'a Script,
        room: &str,
        event: &UnsequencedEvent,
        live: Option<bool>,
        deletes: Option<&str>,
    ) -> ScriptInvocation<'a> {
        let live = match live {
            None => "-",
            Some(true) => "1",
            Some(false) => "0",
        };
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.key(room, "epoch"))
            .key(self.key(room, "seq"))
            .key(self.key(room, "history"))
            .key(self.key(room, "live"))
            .arg(format!("{}{room}", self.channel_prefix()))
            .arg(&event.head)
            .arg(&event.tail)
            .arg(self.history_len)
            .arg(fresh_epoch())
            .arg(HISTORY_TTL_S)
            .arg(live)
            .arg(deletes.unwrap_or_default());
        invocation
    }

    fn key(&self, room: &str, what: &str) -> String {
        format!("{}:room:{room}:{what}", self.cluster)
    }

    fn channel_prefix(&self) -> String {
        format!("{}:events:", self.cluster)
    }

    fn user_channel_prefix(&self) -> String {
        format!("{}:users:", self.cluster)
    }

    fn flash_channel_prefix(&self) -> String {
        format!("{}:flash:", self.cluster)
    }
}

/// A fresh epoch for a room whose history the bus does not have (new, expired, or
/// Redis lost it): positions from before can never match it.
fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(
        &self,
        room: &str,
        event: &UnsequencedEvent,
        live: Option<bool>,
        deletes: Option<&str>,
    ) -> Result<u64, BusError> {
        let seq: u64 = self
            .publishing(&self.publish, room, event, live, deletes)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(seq)
    }

    async fn end_orphaned_video(
        &self,
        room: &str,
        event: &UnsequencedEvent,
    ) -> Result<bool, BusError> {
        let seq: u64 = self
            .publishing(&self.end_orphaned_video, room, event, Some(false), None)
            .key(self.key(room, "video"))
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(seq > 0)
    }

    async fn snapshot(&self, room: &str) -> Result<Snapshot, BusError> {
        let (epoch, seq, live, events): (String, String, u8, Vec<String>) = self
            .snapshot
            .key(self.key(room, "epoch"))
            .key(self.key(room, "seq"))
            .key(self.key(room, "history"))
            .key(self.key(room, "video"))
            .arg(fresh_epoch())
            .arg(HISTORY_TTL_S)
            .invoke_async(&mut self.commands.clone())
            .await?;
        let seq: u64 = seq
            .parse()
            .map_err(|_| BusError::Malformed(format!("room {room}: seq {seq:?}")))?;
        if events.len() as u64 > seq {
            return Err(BusError::Malformed(format!(
                "room {room}: {} events up to seq {seq}",
                events.len()
            )));
        }
        Ok(Snapshot {
            epoch,
            seq,
            live: live == 1,
            events,
        })
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, BusMessage>, BusError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        let (rooms, users) = (self.channel_prefix(), self.user_channel_prefix());
        let flashes = self.flash_channel_prefix();
        pubsub.psubscribe(format!("{rooms}*")).await?;
        pubsub.psubscribe(format!("{users}*")).await?;
        pubsub.psubscribe(format!("{flashes}*")).await?;
        let messages = pubsub.into_on_message().filter_map(move |message| {
            let (channel, payload) = (message.get_channel_name(), message.get_payload_bytes());
            let frame = || std::str::from_utf8(payload).ok().map(str::to_owned);
            let parsed = if let Some(user) = channel.strip_prefix(&users) {
                frame().map(|frame| BusMessage::User {
                    user: user.to_owned(),
                    frame,
                })
            } else if let Some(room) = channel.strip_prefix(&flashes) {
                frame().map(|frame| BusMessage::Flash {
                    room: room.to_owned(),
                    frame,
                })
            } else {
                parse_message(&rooms, channel, payload).map(BusMessage::Room)
            };
            if parsed.is_none() {
                tracing::warn!(channel, "ignoring a malformed bus message");
            }
            std::future::ready(parsed)
        });
        Ok(messages.boxed())
    }

    async fn send_to_user(&self, user: &str, frame: &str) -> Result<(), BusError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{}{user}", self.user_channel_prefix()))
            .arg(frame)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn flash(&self, room: &str, frame: &str) -> Result<(), BusError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{}{room}", self.flash_channel_prefix()))
            .arg(frame)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn add_likes(&self, room: &str, taps: u64) -> Result<Option<(u64, u64)>, BusError> {
        let answer: Option<(u64, u64)> = self
            .likes
            .prepare_invoke()
            .key(self.key(room, "likes:total"))
            .key(self.key(room, "likes:recent"))
            .key(self.key(room, "likes:gate"))
            .arg(taps)
            .arg(LIKES_EVERY_MS)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(answer)
    }

    async fn reset_likes(&self, room: &str) -> Result<(), BusError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(room, "likes:total"))
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn presence(
        &self,
        node: &str,
        counts: &[(String, usize)],
    ) -> Result<Vec<usize>, BusError> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.presence.prepare_invoke();
        invocation.arg(node).arg(self.presence_ttl_ms);
        for (room, count) in counts {
            invocation.key(self.key(room, "viewers")).arg(*count);
        }
        let totals: Vec<usize> = invocation.invoke_async(&mut self.commands.clone()).await?;
        if totals.len() != counts.len() {
            return Err(BusError::Malformed("presence totals".into()));
        }
        Ok(totals)
    }

    async fn add_to_leaderboard(
        &self,
        room: &str,
        sender: &UserRef,
        coins: u64,
    ) -> Result<(), BusError> {
        let (top, names) = (self.key(room, "top"), self.key(room, "names"));
        redis::pipe()
            .zincr(&top, &sender.id, coins)
            .ignore()
            .hset(&names, &sender.id, &sender.name)
            .ignore()
            .expire(&top, HISTORY_TTL_S as i64)
            .ignore()
            .expire(&names, HISTORY_TTL_S as i64)
            .ignore()
            .exec_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn leaderboards(&self, rooms: &[String]) -> Result<Vec<Vec<LeaderEntry>>, BusError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.leaderboards.prepare_invoke();
        invocation.arg(crate::protocol::LEADERBOARD_TOP);
        for room in rooms {
            invocation
                .key(self.key(room, "top"))
                .key(self.key(room, "names"));
        }
        let boards: Vec<Vec<String>> = invocation.invoke_async(&mut self.commands.clone()).await?;
        boards.into_iter().map(|flat| parse_board(&flat)).collect()
    }

    async fn host_video(&self, rooms: &[String], node_url: &str) -> Result<(), BusError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut invocation = self.host_video.prepare_invoke();
        // Claims expire as presence does: a node that stops ticking is gone for both.
        invocation.arg(node_url).arg(self.presence_ttl_ms);
        for room in rooms {
            invocation.key(self.key(room, "video"));
        }
        let _: i64 = invocation.invoke_async(&mut self.commands.clone()).await?;
        Ok(())
    }

    async fn stop_hosting_video(&self, room: &str, node_url: &str) -> Result<(), BusError> {
        let _: i64 = self
            .stop_hosting_video
            .key(self.key(room, "video"))
            .key(self.key(room, "live"))
            .arg(node_url)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn video_host(&self, room: &str) -> Result<Option<String>, BusError> {
        let host: Option<String> = redis::cmd("GET")
            .arg(self.key(room, "video"))
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(host)
    }

    async fn report_load(&self, load: &NodeLoad, ttl_ms: u64) -> Result<Vec<NodeLoad>, BusError> {
        let json = serde_json::to_string(load).map_err(|e| BusError::Malformed(e.to_string()))?;
        let loads: Vec<String> = self
            .report_load
            .key(format!("{}:nodes", self.cluster))
            .arg(&load.url)
            .arg(json)
            .arg(ttl_ms)
            .invoke_async(&mut self.commands.clone())
            .await?;
        loads
            .iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| BusError::Malformed(format!("a load: {e}")))
            })
            .collect()
    }
}

/// `C:events:ROOM` + `EPOCH SEQ LIVE FRAME` into a message; `None` if malformed.
fn parse_message(prefix: &str, channel: &str, payload: &[u8]) -> Option<RoomMessage> {
    let room = channel.strip_prefix(prefix)?;
    let payload = std::str::from_utf8(payload).ok()?;
    let mut parts = payload.splitn(4, ' ');
    let epoch = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let live = match parts.next()? {
        "-" => None,
        "1" => Some(true),
        "0" => Some(false),
        _ => return None,
    };
    Some(RoomMessage {
        room: room.to_owned(),
        epoch: epoch.to_owned(),
        seq,
        live,
        frame: parts.next()?.to_owned(),
    })
}

/// `[id, name, coins, id, name, coins, …]` into entries, most coins first and ties in
/// id order, as the in-process leaderboard orders them.
fn parse_board(flat: &[String]) -> Result<Vec<LeaderEntry>, BusError> {
    let mut board = flat
        .chunks(3)
        .map(|entry| match entry {
            [id, name, coins] => Ok(LeaderEntry {
                id: id.clone(),
                name: name.clone(),
                coins: coins
                    .parse()
                    .map_err(|_| BusError::Malformed(format!("leaderboard coins {coins:?}")))?,
            }),
            _ => Err(BusError::Malformed("leaderboard entry".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    board.sort_by(|a, b| b.coins.cmp(&a.coins).then_with(|| a.id.cmp(&b.id)));
    Ok(board)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_bus_message_and_keeps_spaces_in_the_frame() {
        let message = parse_message(
            "c:events:",
            "c:events:room-1",
            br#"ab12 7 1 {"room":"room-1","seq":7,"text":"a b c"}"#,
        )
        .unwrap();
        assert_eq!(message.room, "room-1");
        assert_eq!(message.epoch, "ab12");
        assert_eq!(message.seq, 7);
        assert_eq!(message.live, Some(true));
        assert_eq!(message.frame, r#"{"room":"room-1","seq":7,"text":"a b c"}"#);
    }

    #[test]
    fn refuses_malformed_bus_messages() {
        assert!(parse_message("c:events:", "other:events:r", b"e 1 - {}").is_none());
        assert!(parse_message("c:events:", "c:events:r", b"e x - {}").is_none());
        assert!(parse_message("c:events:", "c:events:r", b"e 1 ? {}").is_none());
        assert!(parse_message("c:events:", "c:events:r", b"e 1 -").is_none());
    }

    #[test]
    fn boards_are_ordered_by_coins_then_id() {
        let flat: Vec<String> = ["b", "Bo", "5", "a", "Al", "5", "c", "Cy", "9"]
            .map(String::from)
            .to_vec();
        let ids: Vec<String> = parse_board(&flat)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }
}
