// The residents' service worker: shows a pushed warning as a notification and opens it on click.
// A message whose data.event_id was already shown is dropped: the server's outbox delivers at
// least once, so a resend after a crash must not ring twice.
"use strict";

const SEEN = "liandong-seen-events";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

async function firstTime(eventId) {
  if (!eventId) return true;
  const cache = await caches.open(SEEN);
  const key = new Request(`/seen/${encodeURIComponent(eventId)}`);
  if (await cache.match(key)) return false;
  await cache.put(key, new Response("1"));
  return true;
}

self.addEventListener("push", (event) => {
  event.waitUntil((async () => {
    let message = {};
    try { message = event.data ? event.data.json() : {}; } catch (err) { message = { body: event.data && event.data.text() }; }
    const data = message.data || {};
    if (!(await firstTime(data.event_id))) return;
    const url = data.url || "/residents/";
    await self.registration.showNotification(message.title || "预警 Warning", {
      body: message.body || "",
      tag: data.chain || data.alert_id ? `warning-${data.chain || data.alert_id}` : undefined,
      renotify: Boolean(data.alert_id),
      requireInteraction: data.colour === "red" || data.colour === "orange",
      data: { url, alert_id: data.alert_id || null, event_id: data.event_id || null },
    });
  })());
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data.url, self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if ("navigate" in client) { await client.focus(); return client.navigate(url); }
    }
    return self.clients.openWindow(url);
  })());
});
