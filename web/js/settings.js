// Settings: notification channels, addresses and quiet hours; the devices
// that get pushes; the password; signing out.

import { api } from "./api.js";
import * as auth from "./auth.js";
import { busy, field, fill, h, notice, showError, titled } from "./ui.js";

function check(name, label, on) {
  const input = h("input", { type: "checkbox", name, checked: on });
  return { input, el: h("label", { class: "check" }, input, " ", label) };
}

function notificationsForm(settings) {
  const push = check("push", "Push notifications", settings.channels?.push !== false);
  const sms = check("sms", "Text messages (SMS)", settings.channels?.sms !== false);
  const email = check("email", "Email", settings.channels?.email !== false);
  const phone = h("input", { name: "phone", type: "tel", autocomplete: "tel", value: settings.phone || "", placeholder: "+821012345678" });
  const mail = h("input", { name: "email", type: "email", autocomplete: "email", value: settings.email || "" });
  const quiet = check("quiet", "Quiet hours", Boolean(settings.quietHours));
  const start = h("input", { name: "start", type: "time", value: settings.quietHours?.start || "22:00" });
  const end = h("input", { name: "end", type: "time", value: settings.quietHours?.end || "07:00" });
  const zone = h("input", { name: "timeZone", value: settings.quietHours?.timeZone || Intl.DateTimeFormat().resolvedOptions().timeZone });
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h("form", { class: "card" }, h("h2", {}, "Notifications"),
    h("fieldset", {}, h("legend", {}, "Send me"), push.el, sms.el, email.el),
    field("Phone (international format)", phone), field("Email address", mail),
    quiet.el, h("div", { class: "columns" }, field("From", start), field("Until", end), field("Time zone", zone)),
    save);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, async () => {
      const body = {
        channels: { push: push.input.checked, sms: sms.input.checked, email: email.input.checked },
        categories: settings.categories || {},
      };
      if (phone.value.trim()) body.phone = phone.value.trim();
      if (mail.value.trim()) body.email = mail.value.trim();
      if (quiet.input.checked) body.quietHours = { start: start.value, end: end.value, timeZone: zone.value.trim() };
      Object.assign(settings, await api("PUT", "/api/v1/me/notification-settings", { body }));
      notice("Notification settings saved.");
    }, "Saving notification settings");
  });
  return form;
}

function devicesCard(devices) {
  const list = h("ul", { class: "people" });
  for (const d of devices) {
    const remove = h("button", { type: "button", class: "link danger" }, "Remove");
    const row = h("li", { class: "person" }, h("span", { class: "grow" }, `${d.platform} device …${d.tokenSuffix}`, d.enabled ? "" : " (no longer reachable)"), remove);
    remove.addEventListener("click", () => busy(remove, async () => {
      await api("DELETE", `/api/v1/me/devices/${encodeURIComponent(d.deviceId)}`);
      row.remove();
    }, "Removing the device"));
    list.append(row);
  }
  if (!devices.length) list.append(h("li", { class: "empty" }, "No phone gets pushes yet: sign in on the mobile app to add one."));
  return h("section", { class: "card" }, h("h2", {}, "Devices that get pushes"), list);
}

function passwordForm() {
  const current = h("input", { type: "password", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 10 });
  const save = h("button", { type: "submit", class: "primary" }, "Change password");
  const form = h("form", { class: "card" }, h("h2", {}, "Password"),
    field("Current password", current), field("New password", next, "Changing it signs out every other device."), save);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, async () => {
      await auth.changePassword(current.value, next.value);
      current.value = "";
      next.value = "";
      notice("Password changed. Other devices are signed out.");
    }, "Changing the password");
  });
  return form;
}

export async function render(main) {
  const [settings, devices] = await Promise.all([
    api("GET", "/api/v1/me/notification-settings"),
    api("GET", "/api/v1/me/devices").then((r) => r.devices || [], (error) => {
      showError(error, "Loading your devices");
      return [];
    }),
  ]);
  const session = auth.session();
  fill(main, h("h1", {}, "Settings"),
    notificationsForm(settings),
    devicesCard(devices),
    passwordForm(),
    h("section", { class: "card" }, h("h2", {}, "Account"),
      h("p", {}, "Signed in as ", h("strong", {}, session.userName || session.userId)),
      h("button", { type: "button", class: "button", dataset: { action: "sign-out" } }, "Sign out")));
  titled(main, "Settings");
}
