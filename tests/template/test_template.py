"""Offline checks of template.yaml.

The template is expanded with the SAM translator (aws-sam-translator), the same
code `sam build`/`sam deploy` and CloudFormation run, and the generated
CloudFormation resources are checked: Lambda settings, HTTP API routes and
authorizer, stage throttling, IAM least privilege, the DynamoDB tables.

Nothing here touches the network: the region is given to the translator
explicitly, local CodeUris are swapped for S3 URIs (as `sam package` does), and
the managed-policy loader raises if the translator ever asks for it.

Run:   .venv/bin/pytest tests/template
Routes: .venv/bin/python tests/template/test_template.py [--json]
        prints every (METHOD, path) of template.yaml, one "METHOD path" a line
        (or a JSON list of [method, path]); `template_routes()` gives the same
        list to Python callers.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
FUNCTIONS_BIN_DIR = ROOT / "functions" / "src" / "bin"
REGION = "us-east-1"

SAM_FUNCTION = "AWS::Serverless::Function"
SAM_HTTP_API = "AWS::Serverless::HttpApi"

# --------------------------------------------------------------------------
# What the template must contain. Add to these as subsystems land.
# --------------------------------------------------------------------------

# The feed's HTTP functions: function logical id -> its (METHOD, path).
FEED_HTTP_FUNCTIONS = {
    "FeedFollowPutFunction": ("PUT", "/api/v1/me/following/{userId}"),
    "FeedFollowDeleteFunction": ("DELETE", "/api/v1/me/following/{userId}"),
    "FeedFollowingListFunction": ("GET", "/api/v1/me/following"),
    "FeedFollowersListFunction": ("GET", "/api/v1/me/followers"),
    "FeedFriendsListFunction": ("GET", "/api/v1/me/friends"),
    "FeedProfileGetFunction": ("GET", "/api/v1/me/profile"),
    "FeedProfilePutFunction": ("PUT", "/api/v1/me/profile"),
    "FeedUsersGetFunction": ("GET", "/api/v1/users/{userId}"),
    "FeedPostsCreateFunction": ("POST", "/api/v1/me/posts"),
    "FeedPostsGetFunction": ("GET", "/api/v1/posts/{postId}"),
    "FeedPostsDeleteFunction": ("DELETE", "/api/v1/me/posts/{postId}"),
    "FeedUserPostsFunction": ("GET", "/api/v1/users/{userId}/posts"),
    "FeedBlocksPutFunction": ("PUT", "/api/v1/me/blocks/{userId}"),
    "FeedBlocksDeleteFunction": ("DELETE", "/api/v1/me/blocks/{userId}"),
    "FeedReadFunction": ("GET", "/api/v1/me/feed"),
}
# Every feed function: the HTTP ones, the fan-out worker, the outbox sweeper.
FEED_FUNCTIONS = [*FEED_HTTP_FUNCTIONS, "FeedFanoutFunction", "FeedOutboxFunction"]

# The media's HTTP functions: function logical id -> its (METHOD, path).
MEDIA_HTTP_FUNCTIONS = {
    "MediaCreateFunction": ("POST", "/api/v1/me/media"),
    "MediaGetFunction": ("GET", "/api/v1/me/media/{mediaId}"),
    "MediaCompleteFunction": ("POST", "/api/v1/me/media/{mediaId}/complete"),
}
# Every media function: the HTTP ones and the upload worker.
MEDIA_FUNCTIONS = [*MEDIA_HTTP_FUNCTIONS, "MediaProcessFunction"]
# The hanul function (Handler) each media function runs.
MEDIA_HANDLERS = {
    "MediaCreateFunction": "media-create",
    "MediaGetFunction": "media-get",
    "MediaCompleteFunction": "media-complete",
    "MediaProcessFunction": "media-process",
}

# The chat's HTTP functions: function logical id -> its (METHOD, path).
CHAT_HTTP_FUNCTIONS = {
    "ChatConversationsCreateFunction": ("POST", "/api/v1/me/conversations"),
    "ChatConversationsListFunction": ("GET", "/api/v1/me/conversations"),
    "ChatConversationGetFunction": ("GET", "/api/v1/conversations/{conversationId}"),
    "ChatConversationUpdateFunction": ("PATCH", "/api/v1/conversations/{conversationId}"),
    "ChatMembersAddFunction": ("POST", "/api/v1/conversations/{conversationId}/members"),
    "ChatMembersRemoveFunction": ("DELETE", "/api/v1/conversations/{conversationId}/members/{userId}"),
    "ChatMessagesListFunction": ("GET", "/api/v1/conversations/{conversationId}/messages"),
    "ChatMessagesSendFunction": ("POST", "/api/v1/conversations/{conversationId}/messages"),
    "ChatMessagesEditFunction": ("PATCH", "/api/v1/conversations/{conversationId}/messages/{messageId}"),
    "ChatMessagesDeleteFunction": ("DELETE", "/api/v1/conversations/{conversationId}/messages/{messageId}"),
    "ChatReadPutFunction": ("PUT", "/api/v1/conversations/{conversationId}/read"),
    "ChatMutePutFunction": ("PUT", "/api/v1/me/conversations/{conversationId}/mute"),
    "ChatSyncReadFunction": ("GET", "/api/v1/me/messages"),
    "ChatPresenceGetFunction": ("GET", "/api/v1/users/{userId}/presence"),
}
# The chat's WebSocket functions: function logical id -> its route key on
# ChatSocketApi (exactly these routes, one function each).
CHAT_SOCKET_FUNCTIONS = {
    "ChatConnectFunction": "$connect",
    "ChatDisconnectFunction": "$disconnect",
    "ChatDefaultFunction": "$default",
    "ChatSendFunction": "send",
    "ChatSyncFunction": "sync",
    "ChatHeartbeatFunction": "heartbeat",
    "ChatTypingFunction": "typing",
    "ChatReadFunction": "read",
}
# Every chat function: HTTP, WebSocket, the delivery worker, the sweeper.
CHAT_FUNCTIONS = [*CHAT_HTTP_FUNCTIONS, *CHAT_SOCKET_FUNCTIONS, "ChatDeliverFunction", "ChatSweepFunction"]
# The hanul function (Handler) each chat function runs.
CHAT_HANDLERS = {
    "ChatConversationsCreateFunction": "conversations-create",
    "ChatConversationsListFunction": "conversations-list",
    "ChatConversationGetFunction": "conversation-get",
    "ChatConversationUpdateFunction": "conversation-update",
    "ChatMembersAddFunction": "members-add",
    "ChatMembersRemoveFunction": "members-remove",
    "ChatMessagesListFunction": "messages-list",
    "ChatMessagesSendFunction": "messages-send",
    "ChatMessagesEditFunction": "messages-edit",
    "ChatMessagesDeleteFunction": "messages-delete",
    "ChatReadPutFunction": "read-put",
    "ChatMutePutFunction": "mute-put",
    "ChatSyncReadFunction": "sync-read",
    "ChatPresenceGetFunction": "presence-get",
    "ChatConnectFunction": "chat-connect",
    "ChatDisconnectFunction": "chat-disconnect",
    "ChatDefaultFunction": "chat-default",
    "ChatSendFunction": "chat-send",
    "ChatSyncFunction": "chat-sync",
    "ChatHeartbeatFunction": "chat-heartbeat",
    "ChatTypingFunction": "chat-typing",
    "ChatReadFunction": "chat-read",
    "ChatDeliverFunction": "chat-deliver",
    "ChatSweepFunction": "chat-sweep",
}
# The socket stage's name (written literally in the template: a !Ref of the
# stage from a function would be a cycle through the routes' integrations).
CHAT_SOCKET_STAGE = "v1"

# (METHOD, path) -> function logical id. Routes not listed here may exist, but
# these must, wired to exactly this function.
REQUIRED_ROUTES = {
    ("GET", "/health"): "HealthFunction",
    ("GET", "/api/v1/ids"): "IdsGenerateFunction",
    ("GET", "/api/v1/ids/{id}"): "IdsDecodeFunction",
    ("POST", "/api/v1/shorten"): "ShortenerShortenFunction",
    ("POST", "/api/v1/shorten/batch"): "ShortenerShortenBatchFunction",
    ("GET", "/{code}"): "ShortenerRedirectFunction",
    ("HEAD", "/{code}"): "ShortenerRedirectFunction",
    ("GET", "/api/v1/{code}"): "ShortenerRedirectFunction",
    ("HEAD", "/api/v1/{code}"): "ShortenerRedirectFunction",
    ("GET", "/api/v1/urls/{code}"): "ShortenerUrlsGetFunction",
    ("GET", "/api/v1/me/urls"): "ShortenerUrlsListFunction",
    ("PATCH", "/api/v1/urls/{code}"): "ShortenerUrlsUpdateFunction",
    ("DELETE", "/api/v1/urls/{code}"): "ShortenerUrlsDeleteFunction",
    ("GET", "/api/v1/urls/{code}/qr"): "ShortenerUrlsQrFunction",
    ("POST", "/api/v1/ratelimit/check"): "RatelimitCheckFunction",
    ("PUT", "/api/v1/me/devices"): "NotifyDevicesPutFunction",
    ("GET", "/api/v1/me/devices"): "NotifyDevicesListFunction",
    ("DELETE", "/api/v1/me/devices/{deviceId}"): "NotifyDevicesDeleteFunction",
    ("GET", "/api/v1/me/notification-settings"): "NotifySettingsGetFunction",
    ("PUT", "/api/v1/me/notification-settings"): "NotifySettingsPutFunction",
    ("POST", "/api/v1/notifications"): "NotifySendFunction",
    ("GET", "/api/v1/notifications/{id}"): "NotifyStatusFunction",
    **{route: fn_id for fn_id, route in FEED_HTTP_FUNCTIONS.items()},
    **{route: fn_id for fn_id, route in CHAT_HTTP_FUNCTIONS.items()},
    **{route: fn_id for fn_id, route in MEDIA_HTTP_FUNCTIONS.items()},
}

# Routes that take no user token (Auth: {Authorizer: NONE}). The shorten
# routes take an optional one, which the function verifies itself.
REQUIRED_PUBLIC_ROUTES = {
    ("GET", "/health"),
    ("GET", "/api/v1/ids"),
    ("GET", "/api/v1/ids/{id}"),
    ("POST", "/api/v1/shorten"),
    ("POST", "/api/v1/shorten/batch"),
    ("GET", "/{code}"),
    ("HEAD", "/{code}"),
    ("GET", "/api/v1/{code}"),
    ("HEAD", "/api/v1/{code}"),
    ("GET", "/api/v1/urls/{code}/qr"),
    ("POST", "/api/v1/ratelimit/check"),
    # Service key (and, for status, the recipient's token) checked by the function.
    ("POST", "/api/v1/notifications"),
    ("GET", "/api/v1/notifications/{id}"),
}

# Routes that must require the user's token.
REQUIRED_JWT_ROUTES = {
    ("GET", "/api/v1/urls/{code}"),
    ("PATCH", "/api/v1/urls/{code}"),
    ("DELETE", "/api/v1/urls/{code}"),
    ("PUT", "/api/v1/me/devices"),
    ("GET", "/api/v1/me/devices"),
    ("DELETE", "/api/v1/me/devices/{deviceId}"),
    ("GET", "/api/v1/me/notification-settings"),
    ("PUT", "/api/v1/me/notification-settings"),
    # Every feed route is the signed-in user's.
    *FEED_HTTP_FUNCTIONS.values(),
    # So is every chat route.
    *CHAT_HTTP_FUNCTIONS.values(),
    # And every media route.
    *MEDIA_HTTP_FUNCTIONS.values(),
}

JWT_AUTHORIZER = "CognitoJwt"

# Every function role gets exactly these managed policies (SAM adds them:
# basic execution for logs, X-Ray write because Tracing is Active).
BASE_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}

# Inline IAM statements per function: a list of (actions, resource). A function
# not listed here must have no inline statement at all.
URLS = {"Fn::GetAtt": ["UrlsTable", "Arn"]}
CLICKS_QUEUE = {"Fn::GetAtt": ["ClicksQueue", "Arn"]}
INVALIDATIONS_QUEUE = {"Fn::GetAtt": ["CdnInvalidationsQueue", "Arn"]}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
LINK_WRITER = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}

NOTIFY = {"Fn::GetAtt": ["NotifyTable", "Arn"]}
NOTIFY_QUEUES = [
    {"Fn::GetAtt": [f"Notify{q}Queue", "Arn"]} for q in ("PushIos", "PushAndroid", "Sms", "Email")
]
DELIVERY = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
PUSH = (
    {"sns:CreatePlatformEndpoint", "sns:SetEndpointAttributes", "sns:Publish"},
    [
        {"Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:app/*"},
        {"Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:endpoint/*"},
    ],
)

FEED = {"Fn::GetAtt": ["FeedTable", "Arn"]}
FEED_FANOUT_QUEUE = {"Fn::GetAtt": ["FeedFanoutQueue", "Arn"]}
ID_LEASES = {"Fn::GetAtt": ["IdLeasesTable", "Arn"]}
ID_LEASE_WRITER = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}


def ddb(*actions: str) -> set[str]:
    return {f"dynamodb:{a}" for a in actions}


# FeedTable actions per feed function, exactly what its code path calls
# through the `Table` port (shared/src/feed, mapped as the AWS adapter does:
# a transaction needs the item action of each of its ops; batch_put is
# BatchWriteItem).
FEED_ACTIONS: dict[str, set[str]] = {
    # Transaction (puts, updates, checks, a delete), the followee's profile,
    # then a hot-marker transaction or a backfill (query, batch write).
    "FeedFollowPutFunction": ddb(
        "GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem", "BatchWriteItem"
    ),
    # One transaction: edge deletes, counter and meta updates, the hide put.
    "FeedFollowDeleteFunction": ddb("PutItem", "UpdateItem", "DeleteItem"),
    # Read-only: the edge query (the friends' walk too) and batch reads.
    "FeedFollowingListFunction": ddb("Query", "BatchGetItem"),
    "FeedFollowersListFunction": ddb("Query", "BatchGetItem"),
    "FeedFriendsListFunction": ddb("Query", "BatchGetItem"),
    # Read-only: one read of the profile.
    "FeedProfileGetFunction": ddb("GetItem"),
    "FeedUsersGetFunction": ddb("GetItem", "BatchGetItem"),
    # One update of the profile; an avatar's media item first (a batch read).
    "FeedProfilePutFunction": ddb("BatchGetItem", "UpdateItem"),
    # The idempotency key (read), the publish transaction (puts, the profile
    # update), the sent outbox item's delete, the author and the attached
    # media items (batch reads).
    "FeedPostsCreateFunction": ddb("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"),
    # Read-only: the post, then the blocks and the author (batch reads).
    "FeedPostsGetFunction": ddb("GetItem", "BatchGetItem"),
    # A batch read, then one transaction of deletes and the profile update.
    "FeedPostsDeleteFunction": ddb("BatchGetItem", "UpdateItem", "DeleteItem"),
    # Read-only: a batch read of the profile and blocks, the timeline query.
    "FeedUserPostsFunction": ddb("Query", "BatchGetItem"),
    # A batch read, then one transaction (puts, deletes, checks, updates).
    "FeedBlocksPutFunction": ddb("BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"),
    # One transaction: the block's delete and both metas' updates.
    "FeedBlocksDeleteFunction": ddb("UpdateItem", "DeleteItem"),
    # Queries and batch reads; the activity write and a rebuild (meta
    # updates, a batch write of entries).
    "FeedReadFunction": ddb("Query", "BatchGetItem", "UpdateItem", "BatchWriteItem"),
    # Batch reads, the follower query, batch writes, marker transactions,
    # hot/stale/progress updates, the progress read, trims' deletes.
    "FeedFanoutFunction": ddb(
        "GetItem", "Query", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"
    ),
    # The outbox queries and each swept item's delete.
    "FeedOutboxFunction": ddb("Query", "DeleteItem"),
}
FEED_READ_ONLY = {
    fn_id
    for fn_id, actions in FEED_ACTIONS.items()
    if actions <= ddb("GetItem", "Query", "BatchGetItem")
}

# The media bucket's name, spelled out (the queue policy that S3 checks
# before the bucket exists cannot !Ref it).
MEDIA_BUCKET_NAME = "${AWS::StackName}-media-${AWS::AccountId}-${AWS::Region}"
MEDIA_UPLOADS = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${MediaBucket}/uploads/*"}
MEDIA_RENDITIONS = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${MediaBucket}/media/*"}
MEDIA_PROCESS_QUEUE = {"Fn::GetAtt": ["MediaProcessQueue", "Arn"]}
DISTRIBUTION_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${RedirectDistribution}"
}
# The managed CachingOptimized cache policy.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
# The media base URL: the distribution that serves /media/* (the HTTP
# functions cannot name the distribution: it depends on the API).
MEDIA_BASE_URL = {"Ref": "ShortBaseUrl"}

# FeedTable actions per media function (media items live in FeedTable).
MEDIA_ACTIONS: dict[str, set[str]] = {
    # The pending item (a conditional put).
    "MediaCreateFunction": ddb("PutItem"),
    # Read-only: the item.
    "MediaGetFunction": ddb("GetItem"),
    # Read-only: the item (owner, state, upload id).
    "MediaCompleteFunction": ddb("GetItem"),
    # The item, then its conditional ready/rejected update.
    "MediaProcessFunction": ddb("GetItem", "UpdateItem"),
}
# Bucket actions per media function: a list of (actions, resource).
MEDIA_S3: dict[str, list[tuple[set[str], Any]]] = {
    # It presigns uploads: PutObject under uploads/ only.
    "MediaCreateFunction": [({"s3:PutObject"}, MEDIA_UPLOADS)],
    # CompleteMultipartUpload is authorised as PutObject, under uploads/.
    "MediaCompleteFunction": [({"s3:PutObject"}, MEDIA_UPLOADS)],
    # Heads, reads, copies from and deletes the upload (shared/src/media/
    # service.rs `process`, through shared/src/aws/s3.rs); only writes
    # renditions (puts, and a video's copy), never reads or tags them.
    "MediaProcessFunction": [
        ({"s3:GetObject", "s3:DeleteObject"}, MEDIA_UPLOADS),
        # So a missing key's head is 404, not 403 (listing only uploads/).
        ({"s3:ListBucket"}, {"Fn::Sub": "arn:${AWS::Partition}:s3:::${MediaBucket}"}),
        ({"s3:PutObject"}, MEDIA_RENDITIONS),
    ],
}
# The feed functions that attach media (posts, avatars): they make media URLs.
FEED_MEDIA_USERS = {"FeedPostsCreateFunction", "FeedProfilePutFunction"}

CHAT = {"Fn::GetAtt": ["ChatTable", "Arn"]}
CONNECTIONS = {"Fn::GetAtt": ["ConnectionsTable", "Arn"]}
CHAT_DELIVER_QUEUE = {"Fn::GetAtt": ["ChatDeliverQueue", "Arn"]}
_SOCKET_ARN = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${ChatSocketApi}"
# The @connections API of this API's stage: POST sends a frame, DELETE closes.
SOCKET_POST = {"Fn::Sub": f"{_SOCKET_ARN}/{CHAT_SOCKET_STAGE}/POST/@connections/*"}
SOCKET_DELETE = {"Fn::Sub": f"{_SOCKET_ARN}/{CHAT_SOCKET_STAGE}/DELETE/@connections/*"}

_CHAT_MEMBERSHIP = ddb("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem")
_CHAT_MESSAGE = ddb("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem")

# ChatTable actions per chat function (none: not listed).
CHAT_ACTIONS: dict[str, set[str]] = {
    # Reads (the pair's direct conversation, the members' counts), then one
    # transaction of puts, updates and checks.
    "ChatConversationsCreateFunction": ddb("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "ConditionCheckItem"),
    "ChatConversationsListFunction": ddb("Query", "BatchGetItem"),
    "ChatConversationGetFunction": ddb("GetItem", "Query"),
    # Membership changes: reads, then one transaction (member and mirror
    # puts or deletes, count and meta updates, the event, the admin check).
    "ChatConversationUpdateFunction": _CHAT_MEMBERSHIP,
    "ChatMembersAddFunction": _CHAT_MEMBERSHIP,
    "ChatMembersRemoveFunction": _CHAT_MEMBERSHIP,
    "ChatMessagesListFunction": ddb("GetItem", "Query"),
    # A message event: reads, one transaction (message, event, idempotency
    # key, outbox item; the meta update), the sent outbox item's delete.
    "ChatMessagesSendFunction": _CHAT_MESSAGE,
    "ChatSendFunction": _CHAT_MESSAGE,
    "ChatMessagesEditFunction": _CHAT_MESSAGE,
    "ChatMessagesDeleteFunction": _CHAT_MESSAGE,
    # The membership, then a conditional update that only moves forward.
    "ChatReadPutFunction": ddb("GetItem", "UpdateItem"),
    "ChatReadFunction": ddb("GetItem", "UpdateItem"),
    "ChatMutePutFunction": ddb("GetItem", "UpdateItem"),
    # Read-only: the user's sync stream.
    "ChatSyncReadFunction": ddb("Query"),
    "ChatSyncFunction": ddb("Query"),
    # Read-only: the shared-conversation check.
    "ChatPresenceGetFunction": ddb("Query"),
    "ChatTypingFunction": ddb("GetItem", "Query"),
    # The watermark, the events and members, the members' streams.
    "ChatDeliverFunction": ddb("GetItem", "Query", "PutItem", "UpdateItem"),
    # The outbox queries and each swept job's delete.
    "ChatSweepFunction": ddb("Query", "DeleteItem"),
}
# ConnectionsTable actions per chat function (none: not listed).
CONNECTIONS_ACTIONS: dict[str, set[str]] = {
    "ChatConnectFunction": ddb("GetItem", "PutItem", "UpdateItem"),
    "ChatHeartbeatFunction": ddb("GetItem", "PutItem", "UpdateItem"),
    "ChatDisconnectFunction": ddb("GetItem", "PutItem", "UpdateItem", "DeleteItem"),
    "ChatSweepFunction": ddb("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem"),
    # A Gone connection's item is deleted.
    "ChatDeliverFunction": ddb("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"),
    # The connection's user (typing: and the members' presence).
    "ChatTypingFunction": ddb("GetItem", "BatchGetItem"),
    "ChatSendFunction": ddb("GetItem"),
    "ChatSyncFunction": ddb("GetItem"),
    "ChatReadFunction": ddb("GetItem"),
    "ChatDefaultFunction": ddb("GetItem"),
    "ChatPresenceGetFunction": ddb("GetItem"),
}
# Block checks: a batch read of FeedTable, nothing else on it.
CHAT_BLOCK_CHECKERS = {
    "ChatConversationsCreateFunction",
    "ChatMembersAddFunction",
    "ChatMessagesSendFunction",
    "ChatSendFunction",
}
# The functions that write events (ids from leased worker ids).
CHAT_ID_LEASERS = {
    "ChatConversationsCreateFunction",
    "ChatConversationUpdateFunction",
    "ChatMembersAddFunction",
    "ChatMembersRemoveFunction",
    "ChatMessagesSendFunction",
    "ChatMessagesEditFunction",
    "ChatMessagesDeleteFunction",
    "ChatSendFunction",
}
# The functions that queue delivery jobs.
CHAT_DELIVER_SENDERS = CHAT_ID_LEASERS | {
    "ChatReadPutFunction",
    "ChatReadFunction",
    "ChatConnectFunction",
    "ChatDisconnectFunction",
    "ChatHeartbeatFunction",
    "ChatSweepFunction",
}
# The functions that send frames to sockets, and those that also close them.
SOCKET_SENDERS = {
    "ChatSendFunction",
    "ChatSyncFunction",
    "ChatHeartbeatFunction",
    "ChatTypingFunction",
    "ChatReadFunction",
    "ChatDefaultFunction",
    "ChatDeliverFunction",
    "ChatSweepFunction",
}
SOCKET_CLOSERS = {"ChatDeliverFunction", "ChatSweepFunction"}


def _chat_statements(fn_id: str) -> list[tuple[set[str], Any]]:
    statements: list[tuple[set[str], Any]] = []
    if fn_id in CHAT_ACTIONS:
        statements.append((CHAT_ACTIONS[fn_id], CHAT))
    if fn_id in CONNECTIONS_ACTIONS:
        statements.append((CONNECTIONS_ACTIONS[fn_id], CONNECTIONS))
    if fn_id in CHAT_BLOCK_CHECKERS:
        statements.append((ddb("BatchGetItem"), FEED))
    if fn_id in CHAT_ID_LEASERS:
        statements.append((ID_LEASE_WRITER, ID_LEASES))
    if fn_id in CHAT_DELIVER_SENDERS:
        statements.append(({"sqs:SendMessage"}, CHAT_DELIVER_QUEUE))
    if fn_id in SOCKET_SENDERS:
        resources = [SOCKET_POST, SOCKET_DELETE] if fn_id in SOCKET_CLOSERS else SOCKET_POST
        statements.append(({"execute-api:ManageConnections"}, resources))
    if fn_id == "ChatDeliverFunction":
        statements += [
            (CONSUME, CHAT_DELIVER_QUEUE),
            # Offline members' notifications, as NotifySendFunction makes them.
            ({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:DeleteItem"}, NOTIFY),
            ({"sqs:SendMessage"}, NOTIFY_QUEUES),
        ]
    return statements


EXPECTED_STATEMENTS: dict[str, list[tuple[set[str], Any]]] = {
    **{fn_id: _chat_statements(fn_id) for fn_id in CHAT_FUNCTIONS},
    **{fn_id: [(FEED_ACTIONS[fn_id], FEED)] for fn_id in FEED_HTTP_FUNCTIONS},
    "FeedPostsCreateFunction": [
        (FEED_ACTIONS["FeedPostsCreateFunction"], FEED),
        ({"sqs:SendMessage"}, FEED_FANOUT_QUEUE),
        (ID_LEASE_WRITER, ID_LEASES),
    ],
    "FeedFanoutFunction": [
        (FEED_ACTIONS["FeedFanoutFunction"], FEED),
        (CONSUME, FEED_FANOUT_QUEUE),
        # Continuation jobs.
        ({"sqs:SendMessage"}, FEED_FANOUT_QUEUE),
    ],
    "FeedOutboxFunction": [
        (FEED_ACTIONS["FeedOutboxFunction"], FEED),
        ({"sqs:SendMessage"}, FEED_FANOUT_QUEUE),
    ],
    "MediaCreateFunction": [(MEDIA_ACTIONS["MediaCreateFunction"], FEED), *MEDIA_S3["MediaCreateFunction"]],
    "MediaGetFunction": [(MEDIA_ACTIONS["MediaGetFunction"], FEED)],
    "MediaCompleteFunction": [(MEDIA_ACTIONS["MediaCompleteFunction"], FEED), *MEDIA_S3["MediaCompleteFunction"]],
    "MediaProcessFunction": [
        (MEDIA_ACTIONS["MediaProcessFunction"], FEED),
        *MEDIA_S3["MediaProcessFunction"],
        (CONSUME, MEDIA_PROCESS_QUEUE),
    ],
    "NotifyDevicesPutFunction": [({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}, NOTIFY)],
    "NotifyDevicesListFunction": [({"dynamodb:Query"}, NOTIFY)],
    "NotifyDevicesDeleteFunction": [({"dynamodb:DeleteItem"}, NOTIFY)],
    "NotifySettingsGetFunction": [({"dynamodb:GetItem"}, NOTIFY)],
    "NotifySettingsPutFunction": [({"dynamodb:PutItem"}, NOTIFY)],
    "NotifySendFunction": [
        ({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:DeleteItem"}, NOTIFY),
        ({"sqs:SendMessage"}, NOTIFY_QUEUES),
    ],
    "NotifyStatusFunction": [({"dynamodb:Query"}, NOTIFY)],
    "NotifyPushIosFunction": [
        (DELIVERY, NOTIFY),
        (CONSUME, {"Fn::GetAtt": ["NotifyPushIosQueue", "Arn"]}),
        PUSH,
    ],
    "NotifyPushAndroidFunction": [
        (DELIVERY, NOTIFY),
        (CONSUME, {"Fn::GetAtt": ["NotifyPushAndroidQueue", "Arn"]}),
        PUSH,
    ],
    "NotifySmsFunction": [
        (DELIVERY, NOTIFY),
        (CONSUME, {"Fn::GetAtt": ["NotifySmsQueue", "Arn"]}),
        # Phone numbers have no ARN: anything but an SNS resource.
        ({"sns:Publish"}, {"NotResource": "arn:aws:sns:*:*:*"}),
    ],
    "NotifyEmailFunction": [
        (DELIVERY, NOTIFY),
        (CONSUME, {"Fn::GetAtt": ["NotifyEmailQueue", "Arn"]}),
        (
            {"ses:SendEmail"},
            {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${NotifyEmailFrom}"},
        ),
    ],
    "NotifySchedulerFunction": [
        ({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:DeleteItem"}, NOTIFY),
        ({"sqs:SendMessage"}, NOTIFY_QUEUES),
    ],
    "IdsGenerateFunction": [(ID_LEASE_WRITER, ID_LEASES)],
    "ShortenerShortenFunction": [(LINK_WRITER, URLS)],
    "ShortenerShortenBatchFunction": [(LINK_WRITER, URLS)],
    "ShortenerRedirectFunction": [
        ({"dynamodb:GetItem", "dynamodb:UpdateItem"}, URLS),
        ({"sqs:SendMessage"}, CLICKS_QUEUE),
    ],
    "ShortenerUrlsGetFunction": [({"dynamodb:GetItem", "dynamodb:Query"}, URLS)],
    "ShortenerUrlsListFunction": [
        ({"dynamodb:Query", "dynamodb:BatchGetItem"}, URLS),
        ({"dynamodb:DeleteItem"}, URLS),
    ],
    "ShortenerUrlsUpdateFunction": [
        ({"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}, URLS),
        ({"sqs:SendMessage"}, INVALIDATIONS_QUEUE),
    ],
    "ShortenerUrlsDeleteFunction": [
        ({"dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Query"}, URLS),
        ({"sqs:SendMessage"}, INVALIDATIONS_QUEUE),
    ],
    "ShortenerUrlsQrFunction": [({"dynamodb:GetItem"}, URLS)],
    "ShortenerClicksFunction": [
        ({"dynamodb:PutItem", "dynamodb:UpdateItem"}, URLS),
        (CONSUME, CLICKS_QUEUE),
    ],
    "CdnInvalidateFunction": [
        (
            {"cloudfront:CreateInvalidation"},
            {
                "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${RedirectDistribution}"
            },
        ),
        (CONSUME, INVALIDATIONS_QUEUE),
    ],
}

# Every chat function's configuration.
CHAT_ENV = {
    "CHAT_TABLE": {"Ref": "ChatTable"},
    "CONNECTIONS_TABLE": {"Ref": "ConnectionsTable"},
    "CHAT_DELIVER_QUEUE_URL": {"Ref": "ChatDeliverQueue"},
    "ID_LEASES_TABLE": {"Ref": "IdLeasesTable"},
    "CHAT_SOCKET_ENDPOINT": {
        "Fn::Sub": f"https://${{ChatSocketApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{CHAT_SOCKET_STAGE}"
    },
}

# Environment variables a function must have (beyond RUST_LOG, which all have).
EXPECTED_ENV = {
    "IdsGenerateFunction": {"ID_LEASES_TABLE": {"Ref": "IdLeasesTable"}},
    "ShortenerShortenFunction": {
        "URLS_TABLE": {"Ref": "UrlsTable"},
        "SHORT_BASE_URL": {"Ref": "ShortBaseUrl"},
        "SHORTENER_CODE_KEY": {"Ref": "ShortCodeKey"},
        "JWT_ISSUER": {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}"},
        "JWT_AUDIENCE": {"Ref": "UserPoolClient"},
    },
    "ShortenerRedirectFunction": {
        "URLS_TABLE": {"Ref": "UrlsTable"},
        "SHORTENER_CLICKS_QUEUE_URL": {"Ref": "ClicksQueue"},
    },
    "ShortenerUrlsDeleteFunction": {"CDN_INVALIDATIONS_QUEUE_URL": {"Ref": "CdnInvalidationsQueue"}},
    "ShortenerClicksFunction": {"URLS_TABLE": {"Ref": "UrlsTable"}},
    "CdnInvalidateFunction": {"CDN_DISTRIBUTION_ID": {"Ref": "RedirectDistribution"}},
    # The feed service is built with all three at cold start, whether or not
    # the function's role may use the queue or the id leases.
    **{
        fn_id: {
            "FEED_TABLE": {"Ref": "FeedTable"},
            "FEED_FANOUT_QUEUE_URL": {"Ref": "FeedFanoutQueue"},
            "ID_LEASES_TABLE": {"Ref": "IdLeasesTable"},
        }
        for fn_id in FEED_FUNCTIONS
    },
    # The two that attach media make media URLs too.
    **{
        fn_id: {
            "FEED_TABLE": {"Ref": "FeedTable"},
            "FEED_FANOUT_QUEUE_URL": {"Ref": "FeedFanoutQueue"},
            "ID_LEASES_TABLE": {"Ref": "IdLeasesTable"},
            "MEDIA_BASE_URL": MEDIA_BASE_URL,
        }
        for fn_id in FEED_MEDIA_USERS
    },
    # The media service is built with all three at cold start.
    **{
        fn_id: {
            "FEED_TABLE": {"Ref": "FeedTable"},
            "MEDIA_BUCKET": {"Ref": "MediaBucket"},
            "MEDIA_BASE_URL": MEDIA_BASE_URL,
        }
        for fn_id in MEDIA_FUNCTIONS
    },
    # The chat service likewise gets all five.
    **{fn_id: dict(CHAT_ENV) for fn_id in CHAT_FUNCTIONS},
    "ChatConnectFunction": {
        **CHAT_ENV,
        # $connect is public at the gateway: the function checks the token.
        "JWT_ISSUER": {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}"},
        "JWT_AUDIENCE": {"Ref": "UserPoolClient"},
    },
    **{fn_id: {**CHAT_ENV, "FEED_TABLE": {"Ref": "FeedTable"}} for fn_id in CHAT_BLOCK_CHECKERS},
    "ChatDeliverFunction": {
        **CHAT_ENV,
        "CHAT_DELIVER_MAX_ATTEMPTS": "5",
        "NOTIFY_TABLE": {"Ref": "NotifyTable"},
        "NOTIFY_PUSH_IOS_QUEUE_URL": {"Ref": "NotifyPushIosQueue"},
        "NOTIFY_PUSH_ANDROID_QUEUE_URL": {"Ref": "NotifyPushAndroidQueue"},
        "NOTIFY_SMS_QUEUE_URL": {"Ref": "NotifySmsQueue"},
        "NOTIFY_EMAIL_QUEUE_URL": {"Ref": "NotifyEmailQueue"},
    },
}

# Queue workers: function -> the queue its event source mapping reads.
EXPECTED_WORKERS = {
    "ShortenerClicksFunction": "ClicksQueue",
    "CdnInvalidateFunction": "CdnInvalidationsQueue",
    "NotifyPushIosFunction": "NotifyPushIosQueue",
    "NotifyPushAndroidFunction": "NotifyPushAndroidQueue",
    "NotifySmsFunction": "NotifySmsQueue",
    "NotifyEmailFunction": "NotifyEmailQueue",
    "FeedFanoutFunction": "FeedFanoutQueue",
    "ChatDeliverFunction": "ChatDeliverQueue",
    "MediaProcessFunction": "MediaProcessQueue",
}

# Periodic functions: function -> its EventBridge schedule. A failed run
# leaves its work in the table for the next one.
EXPECTED_SCHEDULES = {
    "NotifySchedulerFunction": "rate(1 minute)",
    "FeedOutboxFunction": "rate(1 minute)",
    "ChatSweepFunction": "rate(1 minute)",
}

# Only these functions may see the code key.
CODE_KEY_FUNCTIONS = {"ShortenerShortenFunction", "ShortenerShortenBatchFunction"}

EXPECTED_OUTPUTS = {
    "ApiUrl",
    "UserPoolId",
    "UserPoolClientId",
    "IdLeasesTableName",
    "UrlsTableName",
    "NotifyTableName",
    "FeedTableName",
    "RedirectDistributionDomain",
    "ChatTableName",
    "ConnectionsTableName",
    "ChatSocketUrl",
    "MediaBucketName",
    "DistributionId",
    "WebBucketName",
    "WebUrl",
}

OPENAPI_METHODS = {"get", "put", "post", "delete", "options", "head", "patch"}
ANY_METHOD = "x-amazon-apigateway-any-method"


# --------------------------------------------------------------------------
# Loading and translating
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _source() -> dict:
    # yaml_parse understands the CloudFormation short tags (!Ref, !Sub, !GetAtt...).
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


def source_template() -> dict:
    """template.yaml as written (SAM resources, short tags expanded)."""
    return copy.deepcopy(_source())


def _managed_policy_map() -> dict:
    raise AssertionError(
        "the SAM translator asked for the managed-policy map (it would call IAM): "
        "use inline Statement policies, not bare managed-policy names"
    )


@functools.lru_cache(maxsize=None)
def _translated() -> dict:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = source_template()
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties") or {}
        if resource["Type"] == SAM_FUNCTION and isinstance(props.get("CodeUri"), str):
            if not props["CodeUri"].startswith("s3://"):
                props["CodeUri"] = f"s3://hanul-template-test/{logical_id}.zip"

    # An explicit session: the translator needs a region, and this one needs no
    # credentials, config file or network.
    session = boto3.session.Session(
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    translator = Translator(None, Parser(), boto_session=session)
    return translator.translate(template, parameter_values={}, get_managed_policy_map=_managed_policy_map)


def translated_template() -> dict:
    """template.yaml expanded to plain CloudFormation by the SAM translator."""
    return copy.deepcopy(_translated())


def _resources_of(template: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _http_api_events(template: dict):
    """Yield (function id, event id, METHOD, path, event properties) of every HttpApi event."""
    for fn_id, fn in sorted(_resources_of(template, SAM_FUNCTION).items()):
        events = (fn.get("Properties") or {}).get("Events") or {}
        for ev_id, ev in sorted(events.items()):
            if ev.get("Type") == "HttpApi":
                props = ev.get("Properties") or {}
                yield fn_id, ev_id, str(props["Method"]).upper(), props["Path"], props


def template_routes(template: dict | None = None) -> list[tuple[str, str]]:
    """Every HTTP route of template.yaml as a sorted list of (METHOD, path)."""
    template = source_template() if template is None else template
    return sorted({(method, path) for _, _, method, path, _ in _http_api_events(template)})


def _event_is_public(event_props: dict) -> bool:
    return (event_props.get("Auth") or {}).get("Authorizer") == "NONE"


def _openapi_routes(cfn: dict) -> dict[tuple[str, str], dict]:
    """(METHOD, path) -> OpenAPI operation, from every generated AWS::ApiGatewayV2::Api Body."""
    routes = {}
    for api in _resources_of(cfn, "AWS::ApiGatewayV2::Api").values():
        body = api["Properties"].get("Body") or {}
        for path, item in (body.get("paths") or {}).items():
            for key, operation in item.items():
                if key == ANY_METHOD:
                    routes[("ANY", path)] = operation
                elif key in OPENAPI_METHODS:
                    routes[(key.upper(), path)] = operation
    return routes


def _http_api(cfn: dict) -> dict:
    """The HTTP API as the translator generated it (the one with an OpenAPI Body)."""
    (api,) = [a for a in _resources_of(cfn, "AWS::ApiGatewayV2::Api").values() if "Body" in a["Properties"]]
    return api


def _http_stage(cfn: dict) -> dict:
    """The HTTP API's stage (the WebSocket API has its own)."""
    (stage,) = [
        s for s in _resources_of(cfn, "AWS::ApiGatewayV2::Stage").values()
        if s["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    ]
    return stage


def _socket_routes(cfn: dict) -> dict[str, dict]:
    """Route key -> route properties of every route on ChatSocketApi."""
    routes = {}
    for route in _resources_of(cfn, "AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        assert props["ApiId"] == {"Ref": "ChatSocketApi"}, props
        assert props["RouteKey"] not in routes, props["RouteKey"]
        routes[props["RouteKey"]] = props
    return routes


def _integrated_function(cfn: dict, route: dict) -> str:
    """The function a WebSocket route's integration invokes."""
    target = route["Target"]["Fn::Sub"]
    assert target.startswith("integrations/${") and target.endswith("}"), target
    integration_id = target[len("integrations/${"):-1]
    integration = cfn["Resources"][integration_id]
    assert integration["Type"] == "AWS::ApiGatewayV2::Integration", integration_id
    props = integration["Properties"]
    assert props["ApiId"] == {"Ref": "ChatSocketApi"}, integration_id
    assert props["IntegrationType"] == "AWS_PROXY", integration_id
    uri = props["IntegrationUri"]["Fn::Sub"]
    prefix = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${"
    suffix = ".Arn}/invocations"
    assert uri.startswith(prefix) and uri.endswith(suffix), uri
    return uri[len(prefix):-len(suffix)]


def _socket_functions(cfn: dict) -> set[str]:
    return {_integrated_function(cfn, route) for route in _socket_routes(cfn).values()}


def _statements(role: dict) -> list[dict]:
    out = []
    for policy in role["Properties"].get("Policies") or []:
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _distribution_config(cfn: dict) -> dict:
    (dist,) = _resources_of(cfn, "AWS::CloudFront::Distribution").values()
    return dist["Properties"]["DistributionConfig"]


def _origins(config: dict) -> dict[str, dict]:
    """Origin id -> origin of a distribution config."""
    origins = {o["Id"]: o for o in config["Origins"]}
    assert len(origins) == len(config["Origins"]), "two origins share an id"
    return origins


def _behaviors(config: dict) -> dict[str, dict]:
    """PathPattern -> cache behaviour of a distribution config."""
    behaviors = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
    assert len(behaviors) == len(config["CacheBehaviors"]), "two behaviours share a path pattern"
    return behaviors


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def src() -> dict:
    return source_template()


@pytest.fixture(scope="module")
def cfn() -> dict:
    return translated_template()


@pytest.fixture(scope="module")
def functions(src) -> dict[str, dict]:
    return _resources_of(src, SAM_FUNCTION)


def test_translates_offline_to_plain_cloudformation(cfn):
    types = {r["Type"] for r in cfn["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}, types
    assert "Transform" not in cfn


def test_every_function_is_a_rust_arm64_lambda(cfn, functions):
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    assert set(lambdas) == set(functions)
    assert {fn for fn in REQUIRED_ROUTES.values()} <= set(lambdas)
    for fn_id, fn in lambdas.items():
        props = fn["Properties"]
        assert props["Runtime"] == "provided.al2023", fn_id
        assert props["Architectures"] == ["arm64"], fn_id
        assert isinstance(props["Handler"], str) and props["Handler"] != "bootstrap", fn_id
        assert props["TracingConfig"] == {"Mode": "Active"}, fn_id
        assert props["LoggingConfig"]["LogFormat"] == "JSON", fn_id
        assert props["Environment"]["Variables"]["RUST_LOG"] == "info", fn_id
        assert isinstance(props["MemorySize"], int) and isinstance(props["Timeout"], int), fn_id


def test_every_function_is_built_by_cargo_lambda(functions):
    # One binary for every function, so `sam build` builds it once: SAM groups
    # functions whose build definition (runtime, CodeUri, Metadata,
    # architecture) is the same. The Handler names the function it runs.
    handlers = {}
    for fn_id, fn in functions.items():
        metadata = fn.get("Metadata") or {}
        assert metadata.get("BuildMethod") == "rust-cargolambda", fn_id
        assert metadata.get("BuildProperties") == {"Binary": "hanul-lambda"}, fn_id
        assert fn["Properties"]["CodeUri"] == "./functions", fn_id
        assert "Runtime" not in fn["Properties"] and "Architectures" not in fn["Properties"], fn_id
        handler = fn["Properties"].get("Handler")
        assert isinstance(handler, str) and handler, fn_id
        assert handler not in handlers, f"{fn_id} and {handlers.get(handler)} share handler {handler}"
        handlers[handler] = fn_id
    if FUNCTIONS_BIN_DIR.is_dir():
        assert (FUNCTIONS_BIN_DIR / "hanul-lambda.rs").is_file()


def test_every_http_event_became_a_route_to_its_function(src, cfn):
    routes = _openapi_routes(cfn)
    for fn_id, ev_id, method, path, _ in _http_api_events(src):
        operation = routes.get((method, path))
        assert operation is not None, f"{fn_id}.{ev_id}: {method} {path} missing from the HTTP API body"
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert integration["payloadFormatVersion"] == "2.0"
        assert f"${{{fn_id}.Arn}}" in json.dumps(integration["uri"]), (method, path, fn_id)


def test_generated_routes_are_exactly_the_declared_ones(src, cfn):
    assert sorted(_openapi_routes(cfn)) == template_routes(src)
    routes = template_routes(src)
    assert len(routes) == len(set(routes))


def test_required_routes_exist(src):
    declared = {(m, p): fn_id for fn_id, _, m, p, _ in _http_api_events(src)}
    for route, fn_id in REQUIRED_ROUTES.items():
        assert declared.get(route) == fn_id, route


def test_jwt_authorizer_is_the_cognito_pool(src, cfn):
    (api_id, api), = _resources_of(src, SAM_HTTP_API).items()
    assert api_id == "HttpApi"
    assert api["Properties"]["Auth"]["DefaultAuthorizer"] == JWT_AUTHORIZER

    gen_api = _http_api(cfn)
    scheme = gen_api["Properties"]["Body"]["components"]["securitySchemes"][JWT_AUTHORIZER]
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "jwt"
    assert authorizer["identitySource"] == "$request.header.Authorization"
    issuer = authorizer["jwtConfiguration"]["issuer"]
    assert issuer == {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}"}
    assert authorizer["jwtConfiguration"]["audience"] == [{"Ref": "UserPoolClient"}]
    assert _resources_of(cfn, "AWS::Cognito::UserPool").keys() == {"UserPool"}
    assert _resources_of(cfn, "AWS::Cognito::UserPoolClient").keys() == {"UserPoolClient"}


def test_route_auth_is_as_declared(src, cfn):
    routes = _openapi_routes(cfn)
    public = set()
    for fn_id, _, method, path, props in _http_api_events(src):
        security = routes[(method, path)].get("security")
        if _event_is_public(props):
            public.add((method, path))
            assert security == [{"NONE": []}], (method, path)
        else:
            assert security and JWT_AUTHORIZER in security[0], (method, path, security)
    assert REQUIRED_PUBLIC_ROUTES <= public
    assert not (REQUIRED_JWT_ROUTES & public), REQUIRED_JWT_ROUTES & public


def test_stage_throttling_and_access_logs(src, cfn):
    stage = _http_stage(cfn)
    props = stage["Properties"]
    assert props["StageName"] == "$default"
    assert props["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }
    params = src["Parameters"]
    assert params["ApiThrottlingBurstLimit"]["Default"] == 200
    assert params["ApiThrottlingRateLimit"]["Default"] == 100
    assert props["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    fmt = props["AccessLogSettings"]["Format"]
    assert isinstance(json.loads(fmt.replace("$context.", "")), dict)


def test_roles_are_least_privilege(cfn, functions):
    unknown = set(EXPECTED_STATEMENTS) - set(functions)
    assert not unknown, f"EXPECTED_STATEMENTS names unknown functions {unknown}"
    roles = _resources_of(cfn, "AWS::IAM::Role")
    http_functions = {fn_id for fn_id, _, _, _, _ in _http_api_events(source_template())}
    # The WebSocket functions have the rate-limit layer too.
    http_functions |= _socket_functions(cfn)
    for fn_id in functions:
        role = roles[f"{fn_id}Role"]
        managed = {json.dumps(p, sort_keys=True) if not isinstance(p, str) else p
                   for p in role["Properties"]["ManagedPolicyArns"]}
        expected_managed = set(BASE_MANAGED_POLICIES)
        if fn_id in http_functions:
            # The rate-limit layer every HTTP (and WebSocket) function has.
            expected_managed.add(json.dumps({"Ref": "RateLimitStatePolicy"}))
        assert managed == expected_managed, f"{fn_id}: managed policies {sorted(managed)}"
        statements = _statements(role)
        got = []
        for st in statements:
            assert st["Effect"] == "Allow", (fn_id, st)
            actions = set(_as_list(st["Action"]))
            assert not any(a == "*" or a.endswith(":*") for a in actions), (fn_id, st)
            if "NotResource" in st:
                # Only the SMS sender: every non-SNS target, i.e. phone numbers.
                assert st["NotResource"] == "arn:aws:sns:*:*:*" and actions == {"sns:Publish"}, (fn_id, st)
                got.append((actions, {"NotResource": st["NotResource"]}))
                continue
            assert st["Resource"] != "*" and "*" not in _as_list(st["Resource"]), (fn_id, st)
            got.append((actions, st["Resource"]))
        expected = EXPECTED_STATEMENTS.get(fn_id, [])
        key = lambda pair: json.dumps([sorted(pair[0]), pair[1]], sort_keys=True)  # noqa: E731
        assert sorted(got, key=key) == sorted(expected, key=key), (
            f"{fn_id}: statements {got}, expected {expected} (update EXPECTED_STATEMENTS if intended)"
        )


def test_the_link_list_deletes_only_list_entries(cfn):
    roles = _resources_of(cfn, "AWS::IAM::Role")
    statements = _statements(roles["ShortenerUrlsListFunctionRole"])
    (delete,) = [st for st in statements if "dynamodb:DeleteItem" in _as_list(st["Action"])]
    assert delete["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["owner#*"]}
    }


def test_the_rate_limit_policy_grants_only_conditional_puts(cfn):
    (policy,) = _resources_of(cfn, "AWS::IAM::ManagedPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert _as_list(statement["Action"]) == ["dynamodb:PutItem"]
    assert statement["Resource"] == {"Fn::GetAtt": ["RateLimitsTable", "Arn"]}
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    for fn_id, fn in lambdas.items():
        assert fn["Properties"]["Environment"]["Variables"]["RATE_LIMITS_TABLE"] == {"Ref": "RateLimitsTable"}, fn_id


def test_api_gateway_throttles_the_stage_and_costly_routes(cfn):
    stage = _http_stage(cfn)
    routes = stage["Properties"]["RouteSettings"]
    for route in ("POST /api/v1/shorten", "POST /api/v1/shorten/batch"):
        assert routes[route]["ThrottlingRateLimit"] > 0, route
        assert routes[route]["ThrottlingBurstLimit"] > 0, route


def test_service_keys_come_from_secrets_manager(cfn):
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    value = lambdas["RatelimitCheckFunction"]["Properties"]["Environment"]["Variables"]["SERVICE_API_KEYS"]
    assert "{{resolve:secretsmanager:${ServiceApiKeySecret}" in json.dumps(value)
    assert cfn["Resources"]["ServiceApiKeySecret"]["Type"] == "AWS::SecretsManager::Secret"


def test_function_environment(cfn):
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    for fn_id, env in EXPECTED_ENV.items():
        variables = lambdas[fn_id]["Properties"]["Environment"]["Variables"]
        for name, value in env.items():
            assert variables.get(name) == value, (fn_id, name)


@pytest.mark.parametrize("table_id", ["IdLeasesTable", "FeedTable", "ChatTable", "ConnectionsTable"])
def test_pk_sk_tables(cfn, table_id):
    table = cfn["Resources"][table_id]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_every_table_expires_items_and_is_protected(cfn):
    for table_id, table in _resources_of(cfn, "AWS::DynamoDB::Table").items():
        props = table["Properties"]
        assert props.get("BillingMode") == "PAY_PER_REQUEST", table_id
        assert (props.get("SSESpecification") or {}).get("SSEEnabled") is True, table_id
        assert (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled"), table_id


def test_every_function_has_a_log_group_with_retention(cfn, functions):
    by_name = {}
    for lg_id, lg in _resources_of(cfn, "AWS::Logs::LogGroup").items():
        by_name[json.dumps(lg["Properties"].get("LogGroupName"), sort_keys=True)] = (lg_id, lg)
    for fn_id in functions:
        key = json.dumps({"Fn::Sub": f"/aws/lambda/${{{fn_id}}}"}, sort_keys=True)
        assert key in by_name, f"{fn_id} has no AWS::Logs::LogGroup named /aws/lambda/${{{fn_id}}}"
        _, lg = by_name[key]
        assert lg["Properties"].get("RetentionInDays") is not None, fn_id


def test_workers_read_their_queue_and_report_partial_failures(cfn, functions):
    mappings = _resources_of(cfn, "AWS::Lambda::EventSourceMapping")
    by_function = {}
    for mapping in mappings.values():
        props = mapping["Properties"]
        by_function[props["FunctionName"]["Ref"]] = props
    assert set(by_function) == set(EXPECTED_WORKERS)
    for fn_id, queue in EXPECTED_WORKERS.items():
        props = by_function[fn_id]
        assert props["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}, fn_id
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], fn_id
        # Workers have no HTTP route.
        assert not (functions[fn_id]["Properties"].get("Events") or {}), fn_id


def test_every_queue_has_a_dead_letter_queue_with_an_alarm(cfn):
    queues = _resources_of(cfn, "AWS::SQS::Queue")
    dead_letter = set()
    for q_id, q in queues.items():
        redrive = q["Properties"].get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert target in queues, q_id
            count = redrive["maxReceiveCount"]
            assert count == {"Ref": "NotifyMaxAttempts"} or 1 <= count <= 10, q_id
            dead_letter.add(target)
    assert dead_letter, "no queue has a DLQ"
    for q_id, q in queues.items():
        assert q["Properties"].get("SqsManagedSseEnabled") is True, q_id
        if q_id not in dead_letter:
            assert q["Properties"].get("RedrivePolicy"), f"{q_id} has no dead-letter queue"
    alarmed = {
        dim["Value"]["Fn::GetAtt"][0]
        for alarm in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()
        for dim in alarm["Properties"].get("Dimensions") or []
        if dim["Name"] == "QueueName"
    }
    assert dead_letter <= alarmed, dead_letter - alarmed


def test_optional_token_routes_can_verify_tokens(cfn):
    # Public routes whose function reads an optional token need the pool's
    # issuer and client to check it against.
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    for fn_id in ("ShortenerShortenFunction", "ShortenerShortenBatchFunction"):
        variables = lambdas[fn_id]["Properties"]["Environment"]["Variables"]
        assert {"JWT_ISSUER", "JWT_AUDIENCE"} <= set(variables), fn_id


def test_the_code_key_reaches_only_the_creating_functions(cfn):
    for fn_id, fn in _resources_of(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert ("SHORTENER_CODE_KEY" in variables) == (fn_id in CODE_KEY_FUNCTIONS), fn_id
    assert cfn["Parameters"]["ShortCodeKey"]["NoEcho"] is True


def test_cloudfront_fronts_the_api_and_honours_its_cache_control(cfn):
    config = _distribution_config(cfn)
    origins = _origins(config)
    # The API, the media bucket (for /media/* only), the web client's bucket.
    assert set(origins) == {"api", "media", "web"}
    origin = origins["api"]
    assert origin["DomainName"] == {"Fn::Sub": "${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == "api"
    assert behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert set(behavior["AllowedMethods"]) == {"GET", "HEAD"}
    policies = _resources_of(cfn, "AWS::CloudFront::CachePolicy")
    behaviors = _behaviors(config)
    # Besides QR codes, media and the web client, every behaviour is the
    # API's, for the web client's calls (see the API-call tests below).
    others = {p for p, b in behaviors.items() if b["CachePolicyId"] != {"Ref": "ApiPassThroughCachePolicy"}}
    assert others == {"/api/v1/urls/*/qr", "/media/*", "/app", "/app/*"}
    qr = behaviors["/api/v1/urls/*/qr"]
    assert qr["TargetOriginId"] == "api"
    for b, queries in ((behavior, {"QueryStringBehavior": "none"}),
                       (qr, {"QueryStringBehavior": "whitelist", "QueryStrings": ["format"]})):
        ttl = policies[b["CachePolicyId"]["Ref"]]["Properties"]["CachePolicyConfig"]
        # MinTTL and DefaultTTL 0: a 302's no-store is obeyed and a 301 is
        # kept exactly as long as its max-age says.
        assert (ttl["MinTTL"], ttl["DefaultTTL"]) == (0, 0)
        assert ttl["MaxTTL"] >= 86400
        # Redirects are one object per code (an invalidation of the path
        # removes it); QR codes one per format.
        assert ttl["ParametersInCacheKeyAndForwardedToOrigin"]["QueryStringsConfig"] == queries


def test_cloudfront_proves_itself_and_forwards_the_viewer_address(cfn):
    # `ip` rate-limit rules count a request through CloudFront by its
    # CloudFront-Viewer-Address, which the functions trust only beside an
    # x-origin-verify header carrying the secret that CloudFront adds.
    config = _distribution_config(cfn)
    origins = _origins(config)
    assert origins["api"]["OriginCustomHeaders"] == [
        {"HeaderName": "x-origin-verify", "HeaderValue": {"Ref": "CdnOriginSecret"}}
    ]
    # The secret goes to the API only.
    for origin_id, origin in origins.items():
        if origin_id != "api":
            assert "OriginCustomHeaders" not in origin, origin_id
    policy_ids = set(_resources_of(cfn, "AWS::CloudFront::OriginRequestPolicy"))
    # Redirects and QR codes; the web client's API calls.
    assert policy_ids == {"ApiOriginRequestPolicy", "ApiCallsOriginRequestPolicy"}
    used = set()
    for behavior in [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]:
        if behavior["TargetOriginId"] == "api":
            ref = behavior["OriginRequestPolicyId"]["Ref"]
            assert ref in policy_ids, behavior.get("PathPattern")
            used.add(ref)
        else:
            # S3 needs no viewer header, cookie or query string.
            assert "OriginRequestPolicyId" not in behavior, behavior.get("PathPattern")
    assert used == policy_ids
    for policy_id in policy_ids:
        policy = cfn["Resources"][policy_id]["Properties"]["OriginRequestPolicyConfig"]
        headers = policy["HeadersConfig"]
        assert headers["HeaderBehavior"] == "whitelist", policy_id
        forwarded = {h.lower() for h in headers["Headers"]}
        # The viewer's address; Referer and User-Agent for click analytics;
        # never the Host (API Gateway answers only to its own) nor the
        # secret's header.
        assert {"cloudfront-viewer-address", "referer", "user-agent"} <= forwarded, policy_id
        assert not forwarded & {"host", "x-origin-verify"}, policy_id
        assert policy["QueryStringsConfig"] == {"QueryStringBehavior": "all"}, policy_id

    param = cfn["Parameters"]["CdnOriginSecret"]
    assert param["NoEcho"] is True
    assert param["MinLength"] >= 32
    assert "Default" not in param
    # Every function gets it (every HTTP function has the rate-limit layer).
    for fn_id, fn in _resources_of(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["CDN_ORIGIN_SECRET"] == {"Ref": "CdnOriginSecret"}, fn_id


def test_notify_queues_have_depth_and_age_alarms(cfn):
    alarms = [a["Properties"] for a in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()]
    for q in ("PushIos", "PushAndroid", "Sms", "Email"):
        queue, dlq = f"Notify{q}Queue", f"Notify{q}DeadLetterQueue"
        watched = {
            (a["MetricName"], a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]) for a in alarms
        }
        assert ("ApproximateNumberOfMessagesVisible", dlq) in watched, q
        assert ("ApproximateAgeOfOldestMessage", queue) in watched, q
        # One parameter sets both the queue's receives and the worker's count,
        # so the last attempt is the one the worker marks dead_lettered.
        attempts = {"Ref": "NotifyMaxAttempts"}
        assert cfn["Resources"][queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == attempts
        worker = cfn["Resources"][f"Notify{q}Function"]["Properties"]
        assert worker["Environment"]["Variables"]["NOTIFY_MAX_ATTEMPTS"] == attempts, q
    param = cfn["Parameters"]["NotifyMaxAttempts"]
    assert (param["Default"], param["MinValue"], param["MaxValue"]) == (5, 1, 100)


def test_periodic_functions_run_on_their_schedule(cfn, functions):
    scheduled = {}
    for rule in _resources_of(cfn, "AWS::Events::Rule").values():
        (target,) = rule["Properties"]["Targets"]
        fn_id = target["Arn"]["Fn::GetAtt"][0]
        assert fn_id not in scheduled, f"{fn_id} has two schedules"
        scheduled[fn_id] = rule["Properties"]["ScheduleExpression"]
    assert scheduled == EXPECTED_SCHEDULES
    for fn_id in EXPECTED_SCHEDULES:
        # Periodic functions have no HTTP route.
        events = functions[fn_id]["Properties"].get("Events") or {}
        assert {ev["Type"] for ev in events.values()} == {"Schedule"}, fn_id


def test_worker_queues_outlast_their_workers(cfn):
    # Lambda advises a visibility timeout of six times the function's
    # timeout for an SQS source, so a batch still running is not redelivered.
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    for fn_id, queue in EXPECTED_WORKERS.items():
        timeout = lambdas[fn_id]["Properties"]["Timeout"]
        visibility = cfn["Resources"][queue]["Properties"]["VisibilityTimeout"]
        assert visibility >= 6 * timeout, (fn_id, queue, visibility, timeout)


def test_feed_fanout_queue(cfn):
    resources = cfn["Resources"]
    queue = resources["FeedFanoutQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == 120
    assert resources["FeedFanoutFunction"]["Properties"]["Timeout"] == 20
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["FeedFanoutDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    dlq = resources["FeedFanoutDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert "RedrivePolicy" not in dlq
    alarms = [a["Properties"] for a in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()]
    watched = {(a["MetricName"], a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]) for a in alarms}
    assert ("ApproximateNumberOfMessagesVisible", "FeedFanoutDeadLetterQueue") in watched
    assert ("ApproximateNumberOfMessagesVisible", "FeedFanoutQueue") in watched
    assert ("ApproximateAgeOfOldestMessage", "FeedFanoutQueue") in watched
    (mapping,) = [
        m["Properties"]
        for m in _resources_of(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "FeedFanoutFunction"}
    ]
    assert mapping["BatchSize"] == 10


def test_only_the_publishers_reach_the_fanout_queue_and_id_leases(cfn):
    # Every feed function is configured with the queue and the id leases;
    # the roles decide who may use them.
    senders, leasers = set(), set()
    for fn_id, statements in EXPECTED_STATEMENTS.items():
        for actions, resource in statements:
            if resource == FEED_FANOUT_QUEUE and "sqs:SendMessage" in actions:
                senders.add(fn_id)
            if resource == ID_LEASES:
                leasers.add(fn_id)
    assert senders == {"FeedPostsCreateFunction", "FeedFanoutFunction", "FeedOutboxFunction"}
    assert leasers == {"IdsGenerateFunction", "FeedPostsCreateFunction", *CHAT_ID_LEASERS}
    assert set(EXPECTED_STATEMENTS) >= set(FEED_FUNCTIONS)


def test_feed_functions_get_exactly_their_table_actions():
    # Every feed function has its own exact set; the readers no write at all.
    assert set(FEED_ACTIONS) == set(FEED_FUNCTIONS)
    assert FEED_READ_ONLY == {
        "FeedFollowingListFunction",
        "FeedFollowersListFunction",
        "FeedFriendsListFunction",
        "FeedProfileGetFunction",
        "FeedUsersGetFunction",
        "FeedPostsGetFunction",
        "FeedUserPostsFunction",
    }
    for fn_id in FEED_FUNCTIONS:
        on_feed = [actions for actions, resource in EXPECTED_STATEMENTS[fn_id] if resource == FEED]
        assert on_feed == [FEED_ACTIONS[fn_id]], fn_id


# --------------------------------------------------------------------------
# chat
# --------------------------------------------------------------------------


def test_chat_functions_run_their_handlers(functions):
    chat = {fn_id for fn_id in functions if fn_id.startswith("Chat")}
    assert chat == set(CHAT_FUNCTIONS) == set(CHAT_HANDLERS)
    for fn_id, handler in CHAT_HANDLERS.items():
        assert functions[fn_id]["Properties"]["Handler"] == handler, fn_id


def test_chat_functions_get_exactly_their_table_actions():
    assert set(EXPECTED_STATEMENTS) >= set(CHAT_FUNCTIONS)
    # The connection-only functions never touch ChatTable.
    assert set(CHAT_FUNCTIONS) - set(CHAT_ACTIONS) == {
        "ChatConnectFunction",
        "ChatDisconnectFunction",
        "ChatHeartbeatFunction",
        "ChatDefaultFunction",
    }
    readers = {
        fn_id for fn_id, actions in CHAT_ACTIONS.items() if actions <= ddb("GetItem", "Query", "BatchGetItem")
    }
    assert readers == {
        "ChatConversationsListFunction",
        "ChatConversationGetFunction",
        "ChatMessagesListFunction",
        "ChatSyncReadFunction",
        "ChatSyncFunction",
        "ChatPresenceGetFunction",
        "ChatTypingFunction",
    }
    for fn_id in CHAT_FUNCTIONS:
        by_resource = {}
        for actions, resource in EXPECTED_STATEMENTS[fn_id]:
            key = json.dumps(resource, sort_keys=True)
            assert key not in by_resource, f"{fn_id}: two statements on {resource}"
            by_resource[key] = actions
        assert by_resource.get(json.dumps(CHAT, sort_keys=True)) == CHAT_ACTIONS.get(fn_id), fn_id
        assert by_resource.get(json.dumps(CONNECTIONS, sort_keys=True)) == CONNECTIONS_ACTIONS.get(fn_id), fn_id
        # Block checks read FeedTable and never write it.
        on_feed = by_resource.get(json.dumps(FEED, sort_keys=True))
        assert on_feed == (ddb("BatchGetItem") if fn_id in CHAT_BLOCK_CHECKERS else None), fn_id
    # Only the worker sees notify.
    notify_users = {
        fn_id for fn_id, statements in EXPECTED_STATEMENTS.items()
        if fn_id.startswith("Chat") and any(resource == NOTIFY for _, resource in statements)
    }
    assert notify_users == {"ChatDeliverFunction"}


def test_only_event_writers_and_presence_changes_queue_deliveries():
    senders, consumers = set(), set()
    for fn_id, statements in EXPECTED_STATEMENTS.items():
        for actions, resource in statements:
            if resource == CHAT_DELIVER_QUEUE:
                if "sqs:SendMessage" in actions:
                    senders.add(fn_id)
                if actions == CONSUME:
                    consumers.add(fn_id)
    assert senders == CHAT_DELIVER_SENDERS
    assert len(senders) == 14
    assert consumers == {"ChatDeliverFunction"}


def test_the_socket_api_routes_each_action_to_its_own_function(cfn):
    (api_id,) = [k for k, v in _resources_of(cfn, "AWS::ApiGatewayV2::Api").items() if "Body" not in v["Properties"]]
    assert api_id == "ChatSocketApi"
    api = cfn["Resources"][api_id]["Properties"]
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"

    routes = _socket_routes(cfn)
    assert set(routes) == set(CHAT_SOCKET_FUNCTIONS.values())
    assert len(routes) == 8
    by_route = {route: fn_id for fn_id, route in CHAT_SOCKET_FUNCTIONS.items()}
    integrations = set()
    for key, route in routes.items():
        assert _integrated_function(cfn, route) == by_route[key], key
        integrations.add(route["Target"]["Fn::Sub"])
        # $connect verifies the token itself (a browser cannot send headers).
        assert route["AuthorizationType"] == "NONE", key
    # One integration per route: no function answers two.
    assert len(integrations) == len(routes)
    assert len(_resources_of(cfn, "AWS::ApiGatewayV2::Integration")) == len(routes)


def test_the_socket_stage_deploys_every_route_and_is_throttled(cfn):
    routes = {
        k for k, v in _resources_of(cfn, "AWS::ApiGatewayV2::Route").items()
        if v["Properties"]["ApiId"] == {"Ref": "ChatSocketApi"}
    }
    (dep_id, deployment), = _resources_of(cfn, "AWS::ApiGatewayV2::Deployment").items()
    assert deployment["Properties"]["ApiId"] == {"Ref": "ChatSocketApi"}
    assert set(deployment["DependsOn"]) == routes
    (stage,) = [
        s["Properties"] for s in _resources_of(cfn, "AWS::ApiGatewayV2::Stage").values()
        if s["Properties"]["ApiId"] == {"Ref": "ChatSocketApi"}
    ]
    assert stage["StageName"] == CHAT_SOCKET_STAGE
    assert stage["DeploymentId"] == {"Ref": dep_id}
    assert "AutoDeploy" not in stage
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }


def test_api_gateway_may_invoke_each_socket_function_only_for_its_route(cfn):
    permissions = {}
    for perm in _resources_of(cfn, "AWS::Lambda::Permission").values():
        props = perm["Properties"]
        if props["Principal"] != "apigateway.amazonaws.com" or "Ref" not in props["FunctionName"]:
            continue
        fn_id = props["FunctionName"]["Ref"]
        if fn_id not in CHAT_SOCKET_FUNCTIONS:
            continue
        assert fn_id not in permissions, f"{fn_id} has two invoke permissions"
        assert props["Action"] == "lambda:InvokeFunction", fn_id
        permissions[fn_id] = props["SourceArn"]
    assert set(permissions) == set(CHAT_SOCKET_FUNCTIONS)
    for fn_id, route in CHAT_SOCKET_FUNCTIONS.items():
        assert permissions[fn_id] == {"Fn::Sub": f"{_SOCKET_ARN}/{CHAT_SOCKET_STAGE}/{route}"}, fn_id


def test_manage_connections_only_on_this_socket_stage(cfn):
    # Every execute-api grant in the stack is ManageConnections on the chat
    # stage's @connections, and only the functions that talk to sockets have it.
    roles = _resources_of(cfn, "AWS::IAM::Role")
    senders, closers = set(), set()
    for role_id, role in roles.items():
        for st in _statements(role):
            actions = set(_as_list(st["Action"]))
            if not any(a.startswith("execute-api:") for a in actions):
                continue
            fn_id = role_id.removesuffix("Role")
            assert actions == {"execute-api:ManageConnections"}, (fn_id, st)
            resources = _as_list(st["Resource"])
            assert SOCKET_POST in resources, (fn_id, st)
            assert all(r in (SOCKET_POST, SOCKET_DELETE) for r in resources), (fn_id, st)
            senders.add(fn_id)
            if SOCKET_DELETE in resources:
                closers.add(fn_id)
    assert senders == SOCKET_SENDERS
    assert closers == SOCKET_CLOSERS
    # The ARN names this API and no other (nor a wildcard API or stage).
    for arn in (SOCKET_POST, SOCKET_DELETE):
        api_and_stage = arn["Fn::Sub"].split(":")[-1].split("/")[:2]
        assert api_and_stage == ["${ChatSocketApi}", CHAT_SOCKET_STAGE], arn


def test_chat_functions_reach_this_socket_stage(cfn):
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    for fn_id in CHAT_FUNCTIONS:
        variables = lambdas[fn_id]["Properties"]["Environment"]["Variables"]
        assert variables["CHAT_SOCKET_ENDPOINT"] == CHAT_ENV["CHAT_SOCKET_ENDPOINT"], fn_id
    url = cfn["Outputs"]["ChatSocketUrl"]["Value"]
    assert url == {
        "Fn::Sub": f"wss://${{ChatSocketApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{CHAT_SOCKET_STAGE}"
    }


def test_the_connect_function_can_verify_tokens(cfn):
    variables = _resources_of(cfn, "AWS::Lambda::Function")["ChatConnectFunction"]["Properties"]["Environment"][
        "Variables"
    ]
    issuer = {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}"}
    assert (variables["JWT_ISSUER"], variables["JWT_AUDIENCE"]) == (issuer, {"Ref": "UserPoolClient"})


def test_chat_deliver_queue_is_fifo_with_a_fifo_dlq(cfn):
    resources = cfn["Resources"]
    queue = resources["ChatDeliverQueue"]["Properties"]
    assert queue["FifoQueue"] is True
    # The senders give every job its deduplication id.
    assert queue["ContentBasedDeduplication"] is False
    assert queue["QueueName"] == {"Fn::Sub": "${AWS::StackName}-chat-deliver.fifo"}
    assert queue["VisibilityTimeout"] == 60
    dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }
    dlq = resources[dlq_id]["Properties"]
    # SQS refuses a standard DLQ for a FIFO queue (and the other way round).
    assert dlq["FifoQueue"] is True
    assert dlq["QueueName"]["Fn::Sub"].endswith(".fifo")
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert "RedrivePolicy" not in dlq
    # Every other queue is a standard one, with a standard DLQ.
    for q_id, q in _resources_of(cfn, "AWS::SQS::Queue").items():
        if q_id not in ("ChatDeliverQueue", dlq_id):
            assert not q["Properties"].get("FifoQueue"), q_id
    # The worker gives up on the receive the queue dead-letters after.
    worker = resources["ChatDeliverFunction"]["Properties"]
    assert worker["Environment"]["Variables"]["CHAT_DELIVER_MAX_ATTEMPTS"] == str(
        queue["RedrivePolicy"]["maxReceiveCount"]
    )
    alarms = [a["Properties"] for a in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()]
    watched = {(a["MetricName"], a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]) for a in alarms}
    assert ("ApproximateNumberOfMessagesVisible", dlq_id) in watched
    assert ("ApproximateNumberOfMessagesVisible", "ChatDeliverQueue") in watched
    assert ("ApproximateAgeOfOldestMessage", "ChatDeliverQueue") in watched
    (mapping,) = [
        m["Properties"]
        for m in _resources_of(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "ChatDeliverFunction"}
    ]
    assert mapping["BatchSize"] == 10
    # Lambda refuses a batching window on a FIFO source.
    assert "MaximumBatchingWindowInSeconds" not in mapping


EVENTS_DIR = ROOT / "tests" / "events"


def test_every_chat_handler_has_a_sample_event(src):
    # The HTTP ones are API Gateway v2 events of their route, the socket ones
    # WebSocket proxy events of their route, the worker's an SQS event from
    # the FIFO queue, the sweeper's a scheduled event.
    http = {
        fn_id: (method, path) for fn_id, _, method, path, _ in _http_api_events(src) if fn_id in CHAT_HTTP_FUNCTIONS
    }
    for fn_id, handler in CHAT_HANDLERS.items():
        path = EVENTS_DIR / f"{handler}.json"
        assert path.is_file(), f"tests/events/{handler}.json is missing"
        event = json.loads(path.read_text())
        if fn_id in CHAT_HTTP_FUNCTIONS:
            method, route = http[fn_id]
            assert event["version"] == "2.0", handler
            assert event["routeKey"] == event["requestContext"]["routeKey"] == f"{method} {route}", handler
            assert event["requestContext"]["http"]["method"] == method, handler
            assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], handler
            # The raw path is the route with its parameters filled in.
            params = event.get("pathParameters") or {}
            filled = route
            for name, value in params.items():
                filled = filled.replace("{" + name + "}", value)
            assert "{" not in filled and filled == event["rawPath"], handler
        elif fn_id in CHAT_SOCKET_FUNCTIONS:
            ctx = event["requestContext"]
            route = CHAT_SOCKET_FUNCTIONS[fn_id]
            assert ctx["routeKey"] == route, handler
            expected_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
            assert ctx["eventType"] == expected_type, handler
            assert ctx["stage"] == CHAT_SOCKET_STAGE and ctx["connectionId"], handler
            if route == "$connect":
                assert event["queryStringParameters"]["token"], handler
            if expected_type == "MESSAGE":
                frame = json.loads(event["body"])
                if route != "$default":
                    assert frame["action"] == route, handler
        elif fn_id == "ChatDeliverFunction":
            for record in event["Records"]:
                assert record["eventSource"] == "aws:sqs"
                assert record["eventSourceARN"].endswith(".fifo")
                assert {"MessageGroupId", "MessageDeduplicationId", "SequenceNumber"} <= set(record["attributes"])
            # The first record is a real job (a later one is deliberately not:
            # the Lambda harness checks that a FIFO batch stops at a failure).
            assert json.loads(event["Records"][0]["body"])["kind"] == "events"
        else:
            assert event["detail-type"] == "Scheduled Event", handler


# --------------------------------------------------------------------------
# media
# --------------------------------------------------------------------------


def test_media_functions_run_their_handlers(functions):
    media = {fn_id for fn_id in functions if fn_id.startswith("Media")}
    assert media == set(MEDIA_FUNCTIONS) == set(MEDIA_HANDLERS)
    for fn_id, handler in MEDIA_HANDLERS.items():
        assert functions[fn_id]["Properties"]["Handler"] == handler, fn_id


def _assert_private_bucket(props):
    """Public access blocked every way, no ACLs, encrypted at rest."""
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert props["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    }


def test_media_bucket_is_private_and_encrypted(cfn):
    bucket = cfn["Resources"]["MediaBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    props = bucket["Properties"]
    _assert_private_bucket(props)
    # No ACLs (BucketOwnerEnforced), no website hosting: CloudFront only.
    assert "AccessControl" not in props and "WebsiteConfiguration" not in props
    assert props["BucketName"] == {"Fn::Sub": MEDIA_BUCKET_NAME}
    # The only other bucket is the web client's.
    assert set(_resources_of(cfn, "AWS::S3::Bucket")) == {"MediaBucket", "WebBucket"}


def test_media_bucket_expires_uploads_and_orphans(cfn):
    rules = cfn["Resources"]["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" for r in rules), rules
    # Abandoned (or unprocessed) uploads: a day. The worker deletes the rest.
    uploads = [r for r in rules if r.get("Prefix") == "uploads/" and not r.get("TagFilters")]
    assert [r["ExpirationInDays"] for r in uploads] == [1], rules
    # Unfinished multipart uploads, anywhere: a day.
    multipart = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert [r["AbortIncompleteMultipartUpload"] for r in multipart] == [{"DaysAfterInitiation": 1}], rules
    assert not (multipart[0].get("Prefix") or multipart[0].get("TagFilters")), multipart
    # Renditions tagged orphan=true: a week.
    orphans = [r for r in rules if r.get("Prefix") == "media/"]
    assert len(orphans) == 1, rules
    assert orphans[0]["TagFilters"] == [{"Key": "orphan", "Value": "true"}]
    assert orphans[0]["ExpirationInDays"] == 7
    # Nothing else expires: renditions in use are kept.
    assert len(rules) == 3, rules


def test_media_bucket_notifies_the_process_queue_of_uploads(cfn):
    bucket = cfn["Resources"]["MediaBucket"]
    notifications = bucket["Properties"]["NotificationConfiguration"]
    assert set(notifications) == {"QueueConfigurations"}
    (config,) = notifications["QueueConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert config["Queue"] == MEDIA_PROCESS_QUEUE
    assert config["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}}
    # S3 tests the destination when the notification is set: the queue
    # policy must exist first.
    assert "MediaProcessQueuePolicy" in _as_list(bucket["DependsOn"])


def test_only_the_media_bucket_may_send_to_the_process_queue(cfn):
    policies = _resources_of(cfn, "AWS::SQS::QueuePolicy")
    assert set(policies) == {"MediaProcessQueuePolicy"}
    props = policies["MediaProcessQueuePolicy"]["Properties"]
    assert props["Queues"] == [{"Ref": "MediaProcessQueue"}]
    (st,) = props["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Allow"
    assert st["Principal"] == {"Service": "s3.amazonaws.com"}
    assert _as_list(st["Action"]) == ["sqs:SendMessage"]
    assert st["Resource"] == MEDIA_PROCESS_QUEUE
    # This bucket (by the name it is given), in this account.
    assert st["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{MEDIA_BUCKET_NAME}"}},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }
    bucket_name = cfn["Resources"]["MediaBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    assert st["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(":::" + bucket_name)


def test_media_process_queue(cfn):
    resources = cfn["Resources"]
    queue = resources["MediaProcessQueue"]["Properties"]
    worker = resources["MediaProcessFunction"]["Properties"]
    assert worker["Timeout"] == 60
    # It decodes images of up to 10 MB.
    assert worker["MemorySize"] == 1024
    assert queue["VisibilityTimeout"] == 360 >= 6 * worker["Timeout"]
    assert not queue.get("FifoQueue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["MediaProcessDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    dlq = resources["MediaProcessDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert "RedrivePolicy" not in dlq
    alarms = [a["Properties"] for a in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()]
    dlq_alarms = [
        a for a in alarms
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and a["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["MediaProcessDeadLetterQueue", "QueueName"]}
    ]
    assert len(dlq_alarms) == 1
    (alarm,) = dlq_alarms
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    (mapping,) = [
        m["Properties"]
        for m in _resources_of(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "MediaProcessFunction"}
    ]
    assert mapping["EventSourceArn"] == MEDIA_PROCESS_QUEUE
    # One upload per invocation: one image decoded at a time bounds memory.
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_only_the_media_functions_reach_the_bucket(cfn):
    # Every S3 grant of a function role, by function: exactly MEDIA_S3. The
    # creator may only put under uploads/ (it presigns uploads); only the
    # worker reads uploads or writes renditions; no grant is bucket-wide.
    grants: dict[str, list] = {}
    for role_id, role in _resources_of(cfn, "AWS::IAM::Role").items():
        for st in _statements(role):
            actions = set(_as_list(st["Action"]))
            if not any(a.startswith("s3:") for a in actions):
                continue
            assert all(a.startswith("s3:") for a in actions), (role_id, st)
            grants.setdefault(role_id.removesuffix("Role"), []).append((actions, st["Resource"]))
            if actions == {"s3:ListBucket"}:
                # The one bucket-level grant: listing, limited to uploads/.
                assert st["Condition"] == {"StringLike": {"s3:prefix": "uploads/*"}}, st
    key = lambda pair: json.dumps([sorted(pair[0]), pair[1]], sort_keys=True)  # noqa: E731
    assert {k: sorted(v, key=key) for k, v in grants.items()} == {
        k: sorted(v, key=key) for k, v in MEDIA_S3.items()
    }
    assert grants["MediaCreateFunction"] == [({"s3:PutObject"}, MEDIA_UPLOADS)]
    for actions, resource in (pair for v in grants.values() for pair in v):
        if actions == {"s3:ListBucket"}:
            continue
        assert resource in (MEDIA_UPLOADS, MEDIA_RENDITIONS), resource
    # media-get reads the item only.
    assert not [st for st in _statements(cfn["Resources"]["MediaGetFunctionRole"])
                if any(a.startswith("s3:") for a in _as_list(st["Action"]))]


def test_media_functions_get_exactly_their_table_actions():
    for fn_id in MEDIA_FUNCTIONS:
        on_feed = [actions for actions, resource in EXPECTED_STATEMENTS[fn_id] if resource == FEED]
        assert on_feed == [MEDIA_ACTIONS[fn_id]], fn_id
    # Posts and avatars read the media items they attach.
    assert ddb("BatchGetItem") <= FEED_ACTIONS["FeedPostsCreateFunction"]
    assert ddb("BatchGetItem") <= FEED_ACTIONS["FeedProfilePutFunction"]


def test_media_settings_reach_only_their_functions(cfn):
    for fn_id, fn in _resources_of(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert ("MEDIA_BUCKET" in variables) == (fn_id in MEDIA_FUNCTIONS), fn_id
        makes_urls = fn_id in MEDIA_FUNCTIONS or fn_id in FEED_MEDIA_USERS
        assert ("MEDIA_BASE_URL" in variables) == makes_urls, fn_id
        if makes_urls:
            # One value everywhere: the URLs stored in posts and profiles and
            # those the media functions answer with are the same.
            assert variables["MEDIA_BASE_URL"] == MEDIA_BASE_URL, fn_id


def _assert_s3_origin_with_oac(cfn, config, origin_id, bucket, oac_id):
    """The distribution's origin `origin_id` is `bucket`, signed by an origin
    access control (OAC, not the legacy origin access identity)."""
    origin = _origins(config)[origin_id]
    assert origin["DomainName"] == {"Fn::GetAtt": [bucket, "RegionalDomainName"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": [oac_id, "Id"]}
    oac = cfn["Resources"][oac_id]
    assert oac["Type"] == "AWS::CloudFront::OriginAccessControl"
    oac_config = oac["Properties"]["OriginAccessControlConfig"]
    assert oac_config["OriginAccessControlOriginType"] == "s3"
    assert oac_config["SigningBehavior"] == "always"
    assert oac_config["SigningProtocol"] == "sigv4"


def test_cloudfront_serves_media_from_the_bucket_through_its_oac(cfn):
    config = _distribution_config(cfn)
    _assert_s3_origin_with_oac(cfn, config, "media", "MediaBucket", "MediaOriginAccessControl")

    behavior = _behaviors(config)["/media/*"]
    assert behavior["TargetOriginId"] == "media"
    assert behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert set(behavior["AllowedMethods"]) == set(behavior["CachedMethods"]) == {"GET", "HEAD"}
    assert behavior["Compress"] is True
    # Renditions carry a year's immutable Cache-Control, which it honours.
    assert behavior["CachePolicyId"] == CACHING_OPTIMIZED
    assert behavior["ResponseHeadersPolicyId"] == {"Ref": "MediaResponseHeadersPolicy"}
    # Only /media/* reaches the bucket.
    for b in [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]:
        assert (b["TargetOriginId"] == "media") == (b.get("PathPattern") == "/media/*"), b.get("PathPattern")

    policy = cfn["Resources"]["MediaResponseHeadersPolicy"]
    assert policy["Type"] == "AWS::CloudFront::ResponseHeadersPolicy"
    security = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert security["ContentTypeOptions"] == {"Override": True}
    hsts = security["StrictTransportSecurity"]
    assert hsts["Override"] is True and hsts["AccessControlMaxAgeSec"] >= 31536000


def test_the_bucket_policy_lets_only_this_distribution_read_renditions(cfn):
    policies = _resources_of(cfn, "AWS::S3::BucketPolicy")
    assert set(policies) == {"MediaBucketPolicy", "WebBucketPolicy"}
    props = policies["MediaBucketPolicy"]["Properties"]
    assert props["Bucket"] == {"Ref": "MediaBucket"}
    statements = props["PolicyDocument"]["Statement"]
    allows = [st for st in statements if st["Effect"] == "Allow"]
    denies = [st for st in statements if st["Effect"] == "Deny"]
    assert len(allows) + len(denies) == len(statements)
    (allow,) = allows
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert _as_list(allow["Action"]) == ["s3:GetObject"]
    assert allow["Resource"] == MEDIA_RENDITIONS
    assert allow["Condition"] == {"StringEquals": {"AWS:SourceArn": DISTRIBUTION_ARN}}
    # And nothing over plain HTTP, for anyone.
    (deny,) = denies
    assert deny["Principal"] == "*"
    assert _as_list(deny["Action"]) == ["s3:*"]
    assert sorted(_as_list(deny["Resource"]), key=json.dumps) == sorted(
        [{"Fn::GetAtt": ["MediaBucket", "Arn"]}, {"Fn::Sub": "${MediaBucket.Arn}/*"}], key=json.dumps
    )
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_media_handler_has_a_sample_event(src):
    # The HTTP ones are API Gateway v2 events of their route; the worker's an
    # SQS event from the media-process queue whose body is S3's notification
    # of an upload.
    http = {
        fn_id: (method, path) for fn_id, _, method, path, _ in _http_api_events(src) if fn_id in MEDIA_HTTP_FUNCTIONS
    }
    for fn_id, handler in MEDIA_HANDLERS.items():
        path = EVENTS_DIR / f"{handler}.json"
        assert path.is_file(), f"tests/events/{handler}.json is missing"
        event = json.loads(path.read_text())
        if fn_id in MEDIA_HTTP_FUNCTIONS:
            method, route = http[fn_id]
            assert event["version"] == "2.0", handler
            assert event["routeKey"] == event["requestContext"]["routeKey"] == f"{method} {route}", handler
            assert event["requestContext"]["http"]["method"] == method, handler
            assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], handler
            params = event.get("pathParameters") or {}
            filled = route
            for name, value in params.items():
                filled = filled.replace("{" + name + "}", value)
            assert "{" not in filled and filled == event["rawPath"], handler
            if method == "POST":
                body = json.loads(event["body"])
                wanted = {"parts"} if route.endswith("/complete") else {"contentType", "size"}
                assert wanted <= set(body), handler
        else:
            (record,) = event["Records"]
            assert record["eventSource"] == "aws:sqs"
            assert record["eventSourceARN"].endswith(":media-process")
            (s3_record,) = json.loads(record["body"])["Records"]
            assert s3_record["eventSource"] == "aws:s3"
            assert s3_record["eventName"].startswith("ObjectCreated:")
            assert s3_record["s3"]["object"]["key"].startswith("uploads/")



# --------------------------------------------------------------------------
# The web client on CloudFront, and its API calls through the distribution
# --------------------------------------------------------------------------

# The routes that keep their own behaviour: the redirects fall to the
# default behaviour (cached by the code alone), QR codes have theirs.
REDIRECT_PATHS = {"/{code}", "/api/v1/{code}"}
QR_PATH = "/api/v1/urls/{code}/qr"
QR_PATTERN = "/api/v1/urls/*/qr"
# What stands for every `{param}` in a sample path (a possible short code).
SAMPLE_PARAM = "Ab3dEf9"
# Short codes and aliases next to the API's prefixes: none may leave the
# default (redirect) behaviour. `/` falls there too (its function answers).
DEFAULT_SAMPLES = [
    "/",
    "/Ab3dEf9",
    "/api/v1/Ab3dEf9",
    "/apple",
    "/healthy",
    "/mediaX",
    "/api/v1/shortener",
    "/api/v1/idsAb12",
    "/api/v1/notificationsAb",
    "/api/v1/urlsAb12",
    "/api/v1/usersAb1",
    "/api/v1/mex",
]
API_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
CHAT_SOCKET_SOURCE = "wss://${ChatSocketApi}.execute-api.${AWS::Region}.amazonaws.com"


def _cloudfront_matches(pattern: str, path: str) -> bool:
    """CloudFront's path-pattern match: a glob over the whole path, `*` any
    run of characters (`/` included), `?` exactly one, case-sensitive; the
    leading `/` of a pattern is optional."""
    if not pattern.startswith("/"):
        pattern = "/" + pattern
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path, flags=re.DOTALL) is not None


def _behavior_for(config: dict, path: str) -> dict | None:
    """The cache behaviour CloudFront picks for `path`: the first in list
    order whose pattern matches, or None for the default behaviour."""
    for behavior in config["CacheBehaviors"]:
        if _cloudfront_matches(behavior["PathPattern"], path):
            return behavior
    return None


def _sample_path(route_path: str) -> str:
    return re.sub(r"\{[^}]+\}", SAMPLE_PARAM, route_path)


def _csp_directives(csp: str) -> dict[str, list[str]]:
    directives = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            assert words[0] not in directives, f"CSP repeats {words[0]}"
            directives[words[0]] = words[1:]
    return directives


def _run_cloudfront_function(code: str, uris: list[str]) -> list[dict]:
    """Calls the function's handler() under node on a viewer-request event per
    uri (the cloudfront-js-2.0 event shape); returns what it returned."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    harness = r"""
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const handler = new Function("'use strict';\n" + input.code + "\nreturn handler;")();
const out = input.uris.map((uri) => handler({
  version: '1.0',
  context: { eventType: 'viewer-request' },
  viewer: { ip: '192.0.2.1' },
  request: {
    method: 'GET',
    uri: uri,
    querystring: {},
    headers: { host: { value: 'd111111abcdef8.cloudfront.net' } },
    cookies: {},
  },
}));
process.stdout.write(JSON.stringify(out));
"""
    done = subprocess.run(
        [node, "-e", harness],
        input=json.dumps({"code": code, "uris": uris}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _viewer_request(uri: str) -> dict:
    return {
        "method": "GET",
        "uri": uri,
        "querystring": {},
        "headers": {"host": {"value": "d111111abcdef8.cloudfront.net"}},
        "cookies": {},
    }


def test_cloudfront_path_matching_is_a_first_match_glob():
    assert _cloudfront_matches("/api/v1/urls/*/qr", "/api/v1/urls/Ab3dEf9/qr")
    assert _cloudfront_matches("/api/v1/me/*", "/api/v1/me/devices/x/y")
    assert _cloudfront_matches("/app/*", "/app/")
    assert not _cloudfront_matches("/app/*", "/app")
    assert not _cloudfront_matches("/api/v1/me/*", "/API/v1/me/feed")
    assert _cloudfront_matches("/a?c", "/abc") and not _cloudfront_matches("/a?c", "/abbc")
    assert not _cloudfront_matches("/api/v1/shorten", "/api/v1/shortener")
    config = {"CacheBehaviors": [{"PathPattern": "/x/*/y"}, {"PathPattern": "/x/*"}]}
    assert _behavior_for(config, "/x/1/y") == {"PathPattern": "/x/*/y"}
    assert _behavior_for(config, "/x/1/z") == {"PathPattern": "/x/*"}
    assert _behavior_for(config, "/z") is None


def test_every_api_route_is_an_uncached_call_on_the_distribution(src, cfn):
    # The web client calls the API on the distribution's origin: every route
    # but the redirects and QR codes has a behaviour to the API that allows
    # its method, keeps nothing and forwards the token.
    config = _distribution_config(cfn)
    assert len(config["CacheBehaviors"]) <= 25, "CloudFront allows 25 cache behaviours"
    checked = 0
    for method, path in template_routes(src):
        sample = _sample_path(path)
        behavior = _behavior_for(config, sample)
        if path in REDIRECT_PATHS:
            assert behavior is None, (method, path, behavior and behavior["PathPattern"])
            continue
        assert behavior is not None, f"{method} {path} ({sample}) falls to the default (redirect) behaviour"
        if path == QR_PATH:
            assert behavior["PathPattern"] == QR_PATTERN
            continue
        pattern = behavior["PathPattern"]
        assert behavior["TargetOriginId"] == "api", (method, path, pattern)
        assert behavior["ViewerProtocolPolicy"] == "redirect-to-https", pattern
        assert set(behavior["AllowedMethods"]) == API_METHODS, pattern
        assert method in behavior["AllowedMethods"], (method, path, pattern)
        assert set(behavior["CachedMethods"]) == {"GET", "HEAD"}, pattern
        assert behavior["Compress"] is True, pattern
        assert behavior["CachePolicyId"] == {"Ref": "ApiPassThroughCachePolicy"}, pattern
        assert behavior["OriginRequestPolicyId"] == {"Ref": "ApiCallsOriginRequestPolicy"}, pattern
        assert "FunctionAssociations" not in behavior, pattern
        checked += 1
    # A sanity check that the routes were read (48 when this was written).
    assert checked >= 40, checked
    # The QR behaviour comes before every pattern that would take its paths.
    patterns = [b["PathPattern"] for b in config["CacheBehaviors"]]
    qr_at = patterns.index(QR_PATTERN)
    for i, pattern in enumerate(patterns):
        if _cloudfront_matches(pattern, _sample_path(QR_PATH)):
            assert i >= qr_at, f"{pattern} is listed before {QR_PATTERN}"


def test_short_codes_keep_the_redirect_behaviour(cfn):
    config = _distribution_config(cfn)
    for path in DEFAULT_SAMPLES:
        behavior = _behavior_for(config, path)
        assert behavior is None, (path, behavior and behavior["PathPattern"])
    assert _behavior_for(config, "/api/v1/urls/Ab3dEf9/qr")["PathPattern"] == QR_PATTERN
    assert _behavior_for(config, "/api/v1/urls/Ab3dEf9")["CachePolicyId"] == {"Ref": "ApiPassThroughCachePolicy"}


def test_api_calls_are_not_cached_but_carry_the_token(cfn):
    policy = cfn["Resources"]["ApiPassThroughCachePolicy"]["Properties"]["CachePolicyConfig"]
    # Nothing without Cache-Control is kept; MaxTTL above 0 is what lets a
    # header be in the key, and only a header in the key is forwarded.
    assert (policy["MinTTL"], policy["DefaultTTL"], policy["MaxTTL"]) == (0, 0, 1)
    key = policy["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["HeadersConfig"] == {"HeaderBehavior": "whitelist", "Headers": ["Authorization"]}
    assert key["CookiesConfig"] == {"CookieBehavior": "none"}
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "all"}
    assert (key["EnableAcceptEncodingGzip"], key["EnableAcceptEncodingBrotli"]) == (True, True)

    calls = cfn["Resources"]["ApiCallsOriginRequestPolicy"]["Properties"]["OriginRequestPolicyConfig"]
    headers = calls["HeadersConfig"]
    assert headers["HeaderBehavior"] == "whitelist"
    assert {h.lower() for h in headers["Headers"]} == {
        "content-type", "referer", "user-agent", "x-api-key", "cloudfront-viewer-address",
    }
    assert calls["CookiesConfig"] == {"CookieBehavior": "none"}
    assert calls["QueryStringsConfig"] == {"QueryStringBehavior": "all"}


def test_web_bucket_is_private_and_only_this_distribution_reads_the_client(cfn):
    bucket = cfn["Resources"]["WebBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    props = bucket["Properties"]
    _assert_private_bucket(props)
    # No ACLs, no website hosting: CloudFront only.
    assert "AccessControl" not in props and "WebsiteConfiguration" not in props

    props = cfn["Resources"]["WebBucketPolicy"]["Properties"]
    assert props["Bucket"] == {"Ref": "WebBucket"}
    statements = props["PolicyDocument"]["Statement"]
    allows = [st for st in statements if st["Effect"] == "Allow"]
    denies = [st for st in statements if st["Effect"] == "Deny"]
    assert len(allows) + len(denies) == len(statements)
    (allow,) = allows
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert _as_list(allow["Action"]) == ["s3:GetObject"]
    assert allow["Resource"] == {"Fn::Sub": "${WebBucket.Arn}/app/*"}
    assert allow["Condition"] == {"StringEquals": {"AWS:SourceArn": DISTRIBUTION_ARN}}
    (deny,) = denies
    assert deny["Principal"] == "*"
    assert _as_list(deny["Action"]) == ["s3:*"]
    assert sorted(_as_list(deny["Resource"]), key=json.dumps) == sorted(
        [{"Fn::GetAtt": ["WebBucket", "Arn"]}, {"Fn::Sub": "${WebBucket.Arn}/*"}], key=json.dumps
    )
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # No function role names the bucket (`web publish` uploads with the
    # deployer's own credentials).
    for role_id, role in _resources_of(cfn, "AWS::IAM::Role").items():
        assert "WebBucket" not in json.dumps(_statements(role)), role_id


def test_cloudfront_serves_the_web_client_from_its_bucket_with_its_headers(cfn):
    config = _distribution_config(cfn)
    _assert_s3_origin_with_oac(cfn, config, "web", "WebBucket", "WebOriginAccessControl")

    for path in ("/app", "/app/", "/app/index.html", "/app/config.json", "/app/0123456789ab/js/main.js"):
        behavior = _behavior_for(config, path)
        assert behavior is not None and behavior["TargetOriginId"] == "web", path
        assert behavior["ViewerProtocolPolicy"] == "redirect-to-https", path
        assert set(behavior["AllowedMethods"]) == set(behavior["CachedMethods"]) == {"GET", "HEAD"}, path
        assert behavior["Compress"] is True, path
        assert behavior["CachePolicyId"] == CACHING_OPTIMIZED, path
        assert behavior["ResponseHeadersPolicyId"] == {"Ref": "WebResponseHeadersPolicy"}, path
    # Only /app and /app/* reach the bucket.
    for b in [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]:
        assert (b["TargetOriginId"] == "web") == (b.get("PathPattern") in ("/app", "/app/*")), b.get("PathPattern")

    security = cfn["Resources"]["WebResponseHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"][
        "SecurityHeadersConfig"
    ]
    csp_config = security["ContentSecurityPolicy"]
    assert csp_config["Override"] is True
    csp = csp_config["ContentSecurityPolicy"]["Fn::Sub"]
    assert "unsafe" not in csp
    directives = _csp_directives(csp)
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    connect = directives["connect-src"]
    # Its own origin (the API), the chat socket, Cognito, S3 (path-style
    # presigned uploads, and the media bucket's own host).
    assert connect == [
        "'self'",
        CHAT_SOCKET_SOURCE,
        "https://cognito-idp.${AWS::Region}.amazonaws.com",
        "https://s3.${AWS::Region}.amazonaws.com",
        "https://${MediaBucket.RegionalDomainName}",
    ]
    # The socket named is the chat WebSocket API of this stack.
    socket = cfn["Resources"]["ChatSocketApi"]
    assert socket["Type"] == "AWS::ApiGatewayV2::Api"
    assert socket["Properties"]["ProtocolType"] == "WEBSOCKET"
    # Every ${...} names a resource, a parameter or a pseudo parameter.
    for name in re.findall(r"\$\{([^}]+)\}", csp):
        known = cfn["Resources"].keys() | cfn.get("Parameters", {}).keys()
        assert name.startswith("AWS::") or name.split(".")[0] in known, name
    # Media is served from the short domain, which may be a custom one.
    assert "img-src 'self' data: blob: ${ShortBaseUrl};" in csp
    assert security["ContentTypeOptions"] == {"Override": True}
    assert security["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert security["ReferrerPolicy"] == {"ReferrerPolicy": "strict-origin-when-cross-origin", "Override": True}
    assert security["StrictTransportSecurity"] == {
        "AccessControlMaxAgeSec": 63072000,
        "IncludeSubdomains": True,
        "Override": True,
    }


def test_cloudfront_functions_send_root_to_the_client_and_name_its_page(cfn):
    functions = _resources_of(cfn, "AWS::CloudFront::Function")
    assert set(functions) == {"WebRootRedirectFunction", "WebIndexFunction"}
    for fn_id, fn in functions.items():
        props = fn["Properties"]
        assert props["AutoPublish"] is True, fn_id
        assert props["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0", fn_id
        assert props["FunctionCode"].lstrip().startswith("function handler(event) {"), fn_id

    def association(fn_id):
        return [{"EventType": "viewer-request", "FunctionARN": {"Fn::GetAtt": [fn_id, "FunctionARN"]}}]

    config = _distribution_config(cfn)
    # `/` is answered on the default behaviour; the web behaviours name
    # the page; no other behaviour runs a function.
    assert config["DefaultCacheBehavior"]["FunctionAssociations"] == association("WebRootRedirectFunction")
    for b in config["CacheBehaviors"]:
        if b["PathPattern"] in ("/app", "/app/*"):
            assert b["FunctionAssociations"] == association("WebIndexFunction"), b["PathPattern"]
        else:
            assert "FunctionAssociations" not in b, b["PathPattern"]


def test_cloudfront_functions_behave(cfn):
    resources = cfn["Resources"]
    uris = ["/", "/Ab3dEf9", "/api/v1/Ab3dEf9", "/app/", "/app", "/app/x/js/main.js", "/app/config.json"]

    root = _run_cloudfront_function(resources["WebRootRedirectFunction"]["Properties"]["FunctionCode"], uris)
    assert root[0] == {
        "statusCode": 302,
        "statusDescription": "Found",
        "headers": {"location": {"value": "/app/"}, "cache-control": {"value": "no-store"}},
    }
    # Everything else passes unchanged (redirects, the client, the API).
    for uri, out in zip(uris[1:], root[1:]):
        assert out == _viewer_request(uri), uri

    index = _run_cloudfront_function(resources["WebIndexFunction"]["Properties"]["FunctionCode"], uris)
    got = {uri: out["uri"] for uri, out in zip(uris, index)}
    assert got["/app/"] == got["/app"] == "/app/index.html"
    for uri in ("/app/x/js/main.js", "/app/config.json", "/Ab3dEf9"):
        assert got[uri] == uri
    for uri, out in zip(uris, index):
        assert {k: v for k, v in out.items() if k != "uri"} == {
            k: v for k, v in _viewer_request(uri).items() if k != "uri"
        }, uri


def test_media_bucket_cors_allows_only_presigned_puts(cfn):
    (rule,) = cfn["Resources"]["MediaBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    # The signature is the credential (any origin); PUT only.
    assert rule["AllowedMethods"] == ["PUT"]
    assert rule["AllowedOrigins"] == ["*"]
    assert rule["AllowedHeaders"] == ["content-type"]
    assert rule["ExposedHeaders"] == ["ETag"]
    assert rule["MaxAge"] == 3000


def test_the_web_client_can_sign_in_with_a_password(cfn):
    client = cfn["Resources"]["UserPoolClient"]["Properties"]
    # USER_PASSWORD_AUTH for the browser, SRP for apps; no secret (neither
    # could keep one).
    assert set(client["ExplicitAuthFlows"]) == {
        "ALLOW_USER_SRP_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    }
    assert client["GenerateSecret"] is False


def test_web_outputs(cfn):
    outputs = cfn["Outputs"]
    assert outputs["WebBucketName"]["Value"] == {"Ref": "WebBucket"}
    assert outputs["WebUrl"]["Value"] == {"Fn::Sub": "${ShortBaseUrl}/app/"}
    assert outputs["DistributionId"]["Value"] == {"Ref": "RedirectDistribution"}
    assert outputs["ChatSocketUrl"]["Value"] == {
        "Fn::Sub": "wss://${ChatSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1"
    }


def test_outputs(cfn):
    assert EXPECTED_OUTPUTS <= set(cfn["Outputs"])


def _main(argv: list[str]) -> int:
    routes = template_routes()
    if "--json" in argv:
        print(json.dumps([list(r) for r in routes]))
    else:
        for method, path in routes:
            print(f"{method} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
