"""What a user writes to have their data erased, and to confirm it, in the languages the bot meets most; the
question the bot asks back in the same language. Matching is on a normalised text: lower case, accents and
punctuation removed, so "Lösche meine Daten!" and "loesche meine daten" are one request."""
from __future__ import annotations

import re
import unicodedata

# language -> patterns over the normalised text (words separated by single spaces)
REQUESTS: dict[str, tuple[str, ...]] = {
    "en": (r"\b(delete|erase|remove|wipe)( all)? (of )?my (personal )?(data|information|info|details)\b",
           r"\bforget (about )?me\b", r"\bright to (be forgotten|erasure)\b"),
    "es": (r"\b(borra|borrar|borre|elimina|eliminar|elimine|suprime|suprimir)( todos)? mis datos\b",
           r"\bolvidame\b", r"\bolvidate de mi\b"),
    "de": (r"\b(losche|loesche|loschen|loeschen|losch|entferne|entfernen) (bitte )?(alle )?meine daten\b",
           r"\bmeine daten (bitte )?(loschen|loeschen|entfernen)\b", r"\bvergiss mich\b"),
    "fr": (r"\b(supprime|supprimez|supprimer|efface|effacez|effacer)( toutes)? mes donnees\b",
           r"\boubliez moi\b", r"\boublie moi\b", r"\bdroit a l oubli\b"),
    "pt": (r"\b(apague|apagar|apaga|exclua|excluir|exclui|elimine|eliminar|remova|remover)( todos)? (os )?"
           r"meus dados\b", r"\besqueca me\b", r"\besquece me\b"),
    "it": (r"\b(cancella|cancellare|cancellate|elimina|eliminare|eliminate)( tutti)? i miei dati\b",
           r"\bdimenticami\b"),
    "nl": (r"\b(verwijder|verwijderen|wis)( al)? mijn (gegevens|data)\b", r"\bvergeet mij\b"),
}
_COMPILED = {lang: [re.compile(p) for p in patterns] for lang, patterns in REQUESTS.items()}

YES = {"yes", "y", "yes please", "si", "sí", "ja", "oui", "sim", "confirm", "confirmo", "confirmar", "bestatige",
       "bestatigen", "jawohl", "claro", "ok yes", "yes delete", "yes i confirm"}

QUESTIONS = {
    "en": "You asked us to delete your data. Reply YES within {minutes} minutes to delete everything we store "
          "about you (messages, notes, reminders). You will not get a confirmation afterwards: we will no longer "
          "have your number.",
    "es": "Nos pediste borrar tus datos. Responde YES (o SÍ) en los próximos {minutes} minutos para borrar todo "
          "lo que guardamos sobre ti (mensajes, notas, recordatorios). No recibirás confirmación: ya no "
          "tendremos tu número.",
    "de": "Du hast uns gebeten, deine Daten zu löschen. Antworte innerhalb von {minutes} Minuten mit YES (oder "
          "JA), um alles zu löschen, was wir über dich speichern (Nachrichten, Notizen, Erinnerungen). Eine "
          "Bestätigung bekommst du danach nicht: wir haben deine Nummer dann nicht mehr.",
    "fr": "Vous avez demandé la suppression de vos données. Répondez YES (ou OUI) dans les {minutes} minutes pour "
          "supprimer tout ce que nous conservons sur vous (messages, notes, rappels). Vous ne recevrez pas de "
          "confirmation : nous n'aurons plus votre numéro.",
    "pt": "Você pediu para apagar seus dados. Responda YES (ou SIM) em até {minutes} minutos para apagar tudo o "
          "que guardamos sobre você (mensagens, notas, lembretes). Você não receberá confirmação: não teremos "
          "mais o seu número.",
    "it": "Ci hai chiesto di cancellare i tuoi dati. Rispondi YES (o SÌ) entro {minutes} minuti per cancellare "
          "tutto ciò che conserviamo su di te (messaggi, note, promemoria). Non riceverai conferma: non avremo "
          "più il tuo numero.",
    "nl": "Je vroeg ons je gegevens te verwijderen. Antwoord binnen {minutes} minuten met YES (of JA) om alles "
          "te verwijderen wat we over je bewaren (berichten, notities, herinneringen). Je krijgt daarna geen "
          "bevestiging: we hebben je nummer dan niet meer.",
}
MAX_CONFIRMATION_CHARS = 40


def normalise(text: str) -> str:
    """Lower case, accents and punctuation removed, single spaces: `¡Sí!` -> `si`, `Lösche` -> `losche`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+", " ", plain).split())


def erasure_request_language(text: str | None) -> str | None:
    """The language of an erasure request in `text`, or None when it asks for nothing of the kind."""
    if not text:
        return None
    plain = normalise(text)
    for language, patterns in _COMPILED.items():
        if any(p.search(plain) for p in patterns):
            return language
    return None


def is_confirmation(text: str | None) -> bool:
    """A short "yes" in any of the languages above (the question asks for YES in every language)."""
    if not text or len(text) > MAX_CONFIRMATION_CHARS:
        return False
    return normalise(text) in YES


def question(language: str, minutes: int) -> str:
    return QUESTIONS.get(language, QUESTIONS["en"]).format(minutes=minutes)
