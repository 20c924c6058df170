// Ukrainian and English labels. The page starts in the browser's language (Ukrainian unless it is English).
const LABELS = {
  uk: {
    welcome: "Вітаємо в DAARION City", yourName: "Ваше ім'я", enter: "Увійти", signOut: "Вийти",
    rooms: "Кімнати", create: "Створити", people: "Люди", feed: "Стрічка міста", send: "Надіслати",
    ask: "Запитати", clear: "Очистити історію", reconnecting: "Немає з'єднання — відновлюємо…",
    online: "онлайн", mostActive: "спершу найактивніші", typing: "друкує…", roomName: "Назва кімнати", offline: "Немає з'єднання",
    thinking: "Second Me думає…", city: "Місто", members: "учасників",
    answeredBy: "Відповідає модель", embeddedModel: "(вбудована)", agentsModel: "агент DAARION",
    embeddedModelNote: "Маленька модель на цьому сервері: англійською відповідає сяк-так, " +
      "українською та іншими мовами — погано, часто помиляється.",
    reply: "Відповісти", react: "Реакція", edit: "Редагувати", delete: "Видалити",
    edited: "(змінено)", deletedMessage: "повідомлення видалено", replyingTo: "Відповідь для",
    editing: "Редагування", cancel: "Скасувати",
    notifications: "Сповіщення", noNotifications: "Поки що нічого", mentionedYou: "згадує вас",
    repliedToYou: "відповідає вам", unread: "непрочитані", mentions: "згадки",
    report: "Поскаржитися", reportReason: "Що не так?", reported: "Скаргу надіслано",
    reports: "Скарги", noReports: "Скарг немає", slowMode: "Повільний режим", off: "вимк.",
    ban: "Заблокувати", mute: "Заглушити", kick: "Вигнати", dismiss: "Відхилити",
    deleteIt: "Видалити", muteAuthor: "Заглушити автора", banAuthor: "Заблокувати автора",
    muted: "Вас заглушено в цій кімнаті", banned: "Вас заблоковано в цій кімнаті",
    suspended: "Ваш обліковий запис призупинено", kicked: "Вас вигнали з кімнати",
    slowedDown: "Повільний режим: зачекайте", until: "до",
    onMatrix: "Також у Matrix:", whatDidIMiss: "Що я пропустив?", catchUp: "Що нового", nothingNew: "Нічого нового з вашого останнього прочитання.",
    aboutMe: "Про мене", aboutMeHint: "Що Second Me варто знати про вас (до 2000 символів)",
    save: "Зберегти", forget: "Забути все", saved: "Збережено", forgotten: "Забуто",
    whatIRemember: "Що я пам'ятаю з наших розмов",
    yourData: "Ваші дані", yourDataHint: "Усе, що місто зберігає про вас: завантажте або зітріть.",
    downloadData: "Завантажити мої дані", dataSaved: "Файл збережено",
    eraseAccount: "Видалити обліковий запис",
    eraseWarning: "Ваші повідомлення стануть «видалено», решта даних зникне, а вхід під цим " +
      "обліковим записом стане неможливим. Скасувати це не можна.",
    eraseConfirm: "Так, стерти все",
    searchHint: "Пошук повідомлень…", searchNothing: "Нічого не знайдено", searchMore: "Ще",
    searchTooShort: "Введіть слово з 2 літер або цифр", searchSlowDown: "Забагато пошуків — зачекайте мить",
  },
  en: {
    welcome: "Welcome to DAARION City", yourName: "Your name", enter: "Enter", signOut: "Sign out",
    rooms: "Rooms", create: "Create", people: "People", feed: "City feed", send: "Send",
    ask: "Ask", clear: "Clear history", reconnecting: "Connection lost — reconnecting…",
    online: "online", mostActive: "most active first", typing: "is typing…", roomName: "Room name", offline: "Offline",
    thinking: "Second Me is thinking…", city: "The city", members: "members",
    answeredBy: "Answered by", embeddedModel: "(embedded)", agentsModel: "the DAARION agent",
    embeddedModelNote: "A small model on this server: fair in English, poor in Ukrainian " +
      "and other languages, and often wrong.",
    reply: "Reply", react: "React", edit: "Edit", delete: "Delete",
    edited: "(edited)", deletedMessage: "message deleted", replyingTo: "Replying to",
    editing: "Editing", cancel: "Cancel",
    notifications: "Notifications", noNotifications: "Nothing yet", mentionedYou: "mentioned you",
    repliedToYou: "replied to you", unread: "unread", mentions: "mentions",
    report: "Report", reportReason: "What is wrong?", reported: "Reported",
    reports: "Reports", noReports: "No reports", slowMode: "Slow mode", off: "off",
    ban: "Ban", mute: "Mute", kick: "Kick", dismiss: "Dismiss",
    deleteIt: "Delete", muteAuthor: "Mute author", banAuthor: "Ban author",
    muted: "You are muted in this room", banned: "You are banned from this room",
    suspended: "Your account is suspended", kicked: "You were removed from the room",
    slowedDown: "Slow mode: wait", until: "until",
    onMatrix: "Also on Matrix:", whatDidIMiss: "What did I miss?", catchUp: "Catch-up", nothingNew: "Nothing new since you last read.",
    aboutMe: "About me", aboutMeHint: "What Second Me should know about you (up to 2,000 characters)",
    save: "Save", forget: "Forget everything", saved: "Saved", forgotten: "Forgotten",
    whatIRemember: "What I remember of our talks",
    yourData: "Your data", yourDataHint: "Everything the city keeps about you: download it or erase it.",
    downloadData: "Download my data", dataSaved: "File saved",
    eraseAccount: "Delete my account",
    eraseWarning: "Your messages will show as deleted, the rest of your data goes, and this " +
      "account can never sign in again. This cannot be undone.",
    eraseConfirm: "Yes, erase everything",
    searchHint: "Search messages…", searchNothing: "Nothing found", searchMore: "More",
    searchTooShort: "Type a word of 2 letters or digits", searchSlowDown: "Too many searches — wait a moment",
  },
};

let lang = localStorage.getItem("city.lang") ||
  ((navigator.language || "uk").toLowerCase().startsWith("en") ? "en" : "uk");

export function t(key) {
  return (LABELS[lang] && LABELS[lang][key]) || LABELS.en[key] || key;
}

export function currentLang() { return lang; }

export function setLang(next) {
  lang = next;
  localStorage.setItem("city.lang", next);
  applyLabels();
}

export function applyLabels(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}
