//! The WebSocket frame protocol (README, "Chat"): what each route does with
//! a frame, and the frames it answers with. The same code serves API
//! Gateway's routes on Lambda and the local host's sockets; answers go back
//! through the `Connections` port, and a bad frame gets an error frame while
//! the socket stays open.

use serde_json::{Value, json};

use super::ChatError;
use super::model::{SendMessage, SyncQuery};
use super::service::ChatService;
use crate::ports::ConnectionError;

/// API Gateway's limit on an incoming frame; the local host holds to it.
pub const MAX_INCOMING_FRAME: usize = 32 * 1024;

/// The actions with a route of their own (API Gateway routes on
/// `$request.body.action`); anything else goes to `$default`.
pub const ACTIONS: &[&str] = &["send", "sync", "heartbeat", "typing", "read"];

/// The route a frame takes, as API Gateway selects it.
pub fn route_of(body: &str) -> &'static str {
    let action = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_owned));
    match action.as_deref() {
        Some(a) => ACTIONS
            .iter()
            .find(|x| **x == a)
            .copied()
            .unwrap_or("$default"),
        None => "$default",
    }
}

pub fn error_frame(
    code: &str,
    message: &str,
    action: Option<&str>,
    client_id: Option<&str>,
) -> String {
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(a) = action {
        frame["action"] = json!(a);
    }
    if let Some(c) = client_id {
        frame["clientMessageId"] = json!(c);
    }
    frame.to_string()
}

fn field<'a>(frame: &'a Value, name: &str) -> Result<&'a str, ChatError> {
    frame.get(name).and_then(Value::as_str).ok_or_else(|| {
        ChatError::invalid(
            "invalid_request",
            format!("`{name}` (a string) is required"),
        )
    })
}

/// A number or a string holding one.
fn loose(frame: &Value, name: &str) -> Option<String> {
    match frame.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl ChatService {
    /// Posts a frame to a connection; a gone one is removed.
    pub async fn reply(&self, user: &str, connection_id: &str, frame: &str) {
        match self.connections.post(connection_id, frame).await {
            Ok(()) => {}
            Err(ConnectionError::Gone) => {
                if let Err(e) = self.drop_connection(user, connection_id).await {
                    tracing::warn!(error = %e, "a gone connection could not be removed");
                }
            }
            Err(e) => tracing::warn!(error = %e, connection_id, "a reply could not be posted"),
        }
    }

    /// One frame on a route other than `$connect`/`$disconnect`. `user` is
    /// the connection's (the caller looked it up).
    pub async fn handle_frame(&self, route: &str, user: &str, connection_id: &str, body: &str) {
        let frame = self.answer(route, user, connection_id, body).await;
        if let Some(frame) = frame {
            self.reply(user, connection_id, &frame).await;
        }
    }

    async fn answer(
        &self,
        route: &str,
        user: &str,
        connection_id: &str,
        body: &str,
    ) -> Option<String> {
        if body.len() > MAX_INCOMING_FRAME {
            return Some(error_frame(
                "frame_too_large",
                &format!("a frame is at most {MAX_INCOMING_FRAME} bytes"),
                None,
                None,
            ));
        }
        let Ok(frame) = serde_json::from_str::<Value>(body) else {
            return Some(error_frame(
                "bad_frame",
                "a frame is a JSON object",
                None,
                None,
            ));
        };
        if !frame.is_object() {
            return Some(error_frame(
                "bad_frame",
                "a frame is a JSON object",
                None,
                None,
            ));
        }
        let action = frame.get("action").and_then(Value::as_str);
        let client_id = frame.get("clientMessageId").and_then(Value::as_str);
        let known = action.filter(|a| ACTIONS.contains(a) && *a == route);
        let Some(action) = known else {
            let message = match action {
                Some(a) => format!(
                    "unknown action {:?}; the actions are {}",
                    a.chars().take(40).collect::<String>(),
                    ACTIONS.join(", ")
                ),
                None => format!("a frame names its `action`: one of {}", ACTIONS.join(", ")),
            };
            return Some(error_frame("unknown_action", &message, action, None));
        };
        let answered = match action {
            "send" => self.frame_send(user, &frame).await,
            "sync" => self.frame_sync(user, &frame).await,
            "heartbeat" => self.heartbeat(user, connection_id).await.map(|()| {
                Some(
                    json!({"type": "heartbeat_ack", "heartbeatSeconds": self.config.heartbeat.as_secs()})
                        .to_string(),
                )
            }),
            "typing" => match field(&frame, "conversationId") {
                Ok(cid) => self.typing(user, cid).await.map(|_| None),
                Err(e) => Err(e),
            },
            "read" => self.frame_read(user, &frame).await,
            _ => Ok(None),
        };
        match answered {
            Ok(frame) => frame,
            Err(e) => {
                if !e.is_client_error() {
                    tracing::warn!(error = %e, action, "a frame failed");
                }
                let message = e.to_string();
                Some(error_frame(e.code(), &message, Some(action), client_id))
            }
        }
    }

    async fn frame_send(&self, user: &str, frame: &Value) -> Result<Option<String>, ChatError> {
        let cid = field(frame, "conversationId")?;
        let request = SendMessage {
            client_message_id: field(frame, "clientMessageId")?.to_owned(),
            text: field(frame, "text")?.to_owned(),
        };
        let client_id = request.client_message_id.clone();
        let sent = self.send(user, cid, request).await?;
        Ok(Some(
            json!({
                "type": "ack",
                "clientMessageId": client_id,
                "message": sent.message,
                "created": sent.created,
            })
            .to_string(),
        ))
    }

    async fn frame_sync(&self, user: &str, frame: &Value) -> Result<Option<String>, ChatError> {
        let page = self
            .sync(
                user,
                SyncQuery {
                    since: loose(frame, "since"),
                    limit: loose(frame, "limit"),
                },
            )
            .await?;
        let mut out =
            serde_json::to_value(&page).map_err(|e| ChatError::Store(format!("sync page: {e}")))?;
        out["type"] = json!("sync");
        Ok(Some(out.to_string()))
    }

    async fn frame_read(&self, user: &str, frame: &Value) -> Result<Option<String>, ChatError> {
        let cid = field(frame, "conversationId")?;
        let message_id = loose(frame, "messageId")
            .ok_or_else(|| ChatError::invalid("invalid_request", "`messageId` is required"))?;
        let state = self.mark_read(user, cid, &message_id).await?;
        let mut out = serde_json::to_value(&state)
            .map_err(|e| ChatError::Store(format!("read state: {e}")))?;
        out["type"] = json!("read_ack");
        Ok(Some(out.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_route_on_their_action() {
        assert_eq!(route_of(r#"{"action":"send"}"#), "send");
        assert_eq!(route_of(r#"{"action":"dance"}"#), "$default");
        assert_eq!(route_of("not json"), "$default");
        assert_eq!(route_of(r#"{"action":3}"#), "$default");
        assert_eq!(route_of("[]"), "$default");
    }
}
