"""Batches of texts for `keel validate` on a text dataset: a reference of real SMS messages,
held-out messages that are clean against it, a batch in another language (Spanish messages
written for these tests) and one of another topic mix (the opening lines of 20 Newsgroups posts)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tests.conftest import REPO

SMS_CSV = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
SMS_CONFIG = REPO / "conf" / "datasets" / "sms-spam.yaml"
NEWS_CSV = REPO / "data" / "20news-sample" / "20news_sample.csv.gz"  # 600 posts, 30 per newsgroup (data/README.md)
REFERENCE_ROWS = 500

# Short Spanish messages, as friends and family text each other; each with five endings: 200 texts.
SPANISH = [
    "¿Quedamos mañana a las ocho en la plaza?", "Llego tarde, el autobús todavía no ha pasado",
    "Te llamo cuando salga del trabajo", "¿Has visto las llaves del coche? No las encuentro por ningún sitio",
    "Gracias por la cena de anoche, estuvo buenísima", "Mi madre dice que vengas a comer el domingo",
    "No puedo hablar ahora, estoy en una reunión", "¿Compraste el pan? Si no, paso yo por la panadería",
    "Feliz cumpleaños, que pases un día estupendo con tu familia", "El partido empieza a las nueve, ¿lo vemos juntos?",
    "Ya estoy en casa, el viaje fue muy largo", "¿Me puedes enviar la dirección del restaurante?",
    "Hace mucho frío hoy, lleva una chaqueta", "Mañana no hay clase porque es fiesta en el pueblo",
    "Se me ha olvidado el cargador en tu casa", "¿A qué hora sale el tren para Madrid?",
    "Estoy haciendo la compra, ¿necesitas algo del supermercado?", "Los niños ya están dormidos, puedes venir cuando quieras",
    "He reservado una mesa para cuatro personas a las diez", "¿Qué tal el examen? Seguro que te salió muy bien",
    "Recuerda que el médico es el jueves por la mañana", "No encuentro aparcamiento, voy a tardar un poco más",
    "¿Vienes a la playa este fin de semana con nosotros?", "La reunión se ha cambiado al martes por la tarde",
    "Acabo de ver tu mensaje, perdona por no contestar antes", "¿Me prestas tu bicicleta para ir al mercado?",
    "Mi hermano llega esta noche desde Barcelona", "Ha empezado a llover, mejor quedamos dentro del café",
    "¿Sabes si la farmacia de la esquina abre los domingos?", "Te espero en la puerta del cine a las siete y media",
    "El perro se ha escapado otra vez, ayúdame a buscarlo", "¿Cuánto cuesta la entrada del concierto del sábado?",
    "Ya he pagado la factura de la luz, no te preocupes", "Esta semana trabajo hasta muy tarde todos los días",
    "¿Puedes recoger a la abuela en la estación?", "Qué ganas tengo de verte, hace meses que no hablamos",
    "El jefe dice que mañana tenemos que llegar antes", "¿Te apetece una paella para comer el domingo?",
    "He perdido el móvil, te escribo desde el ordenador de mi hermana", "Vamos a celebrar la boda en septiembre",
]
ENDINGS = ["", " Un beso.", " Hasta luego.", " Avísame cuando puedas.", " ¡Muchas gracias!"]


def sms_messages() -> pd.DataFrame:
    """The SMS Spam Collection's usable messages (id, label, text as read): 35 of them hold
    cp1252 quotes read as Latin-1 (mojibake), which ingest and validation set aside."""
    from keel.data.text_rule import text_problems, usable

    rows = pd.read_csv(SMS_CSV, dtype=str, keep_default_na=False)
    return rows[usable(text_problems(rows["text"].tolist()))].reset_index(drop=True)


def write_config(folder: Path, reference: pd.DataFrame, **overrides) -> Path:
    """The shipped sms-spam config on `reference` (as reference.csv), with its suite at suite.json."""
    reference.to_csv(folder / "reference.csv", index=False)
    raw = yaml.safe_load(SMS_CONFIG.read_text())
    raw.update(name="sms-small", train=[{"path": "reference.csv"}], expectations="suite.json", **overrides)
    path = folder / "sms-small.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def held_out_messages(messages: pd.DataFrame, reference: pd.DataFrame, token_bounds: list[int], tokenizer,
                      n: int = 200) -> pd.DataFrame:
    """`n` real messages not in `reference` that a suite inferred from it should accept: none
    repeats or nearly repeats a reference message (word n-gram cosine < 0.8), each is within the
    suite's token bounds, and none repeats another."""
    from keel.data.textdups import TextFeatures, normalised

    pool = messages.iloc[len(reference) + 1000:].copy()
    pool["key"] = [normalised(t) for t in pool["text"]]
    pool = pool[~pool["key"].isin({normalised(t) for t in reference["text"]})].drop_duplicates("key")
    features = TextFeatures(3)
    similarity = features.features(pool["text"].tolist()) @ features.features(reference["text"].tolist()).T
    pool = pool[similarity.max(axis=1) < 0.8]
    tokens = np.array([len(e.ids) for e in tokenizer.encode_batch(pool["text"].tolist())])
    pool = pool[(tokens >= token_bounds[0]) & (tokens <= token_bounds[1])]
    return pool.drop(columns="key").head(n).reset_index(drop=True)


def spanish_batch() -> list[dict]:
    """200 Spanish messages, unlabelled, with ids."""
    texts = [f"{text}{ending}" for ending, text in itertools.product(ENDINGS, SPANISH)]
    return [{"id": f"es-{i}", "text": text} for i, text in enumerate(texts)]


def newsgroup_openings(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """The first lines (up to 200 characters) of the bodies of `n` 20 Newsgroups posts, headers
    and quoted lines left out, labelled ham: a batch of another topic mix."""
    posts = pd.read_csv(NEWS_CSV).sample(n=3 * n, random_state=seed)
    openings = []
    for post_id, text in zip(posts["id"], posts["text"]):
        body = text.split("\n\n", 1)[1] if "\n\n" in text else text
        lines = [line.strip() for line in body.splitlines() if line.strip() and not line.lstrip().startswith(("|", ">", ":"))
                 and "writes:" not in line and "wrote:" not in line]
        opening = " ".join(lines)[:200].strip()
        if len(opening.split()) >= 5:
            openings.append({"id": f"news-{post_id}", "label": "ham", "text": opening})
    return pd.DataFrame(openings[:n])


def write_jsonl(path: Path, records: list[dict], raw_lines: list[bytes] = ()) -> Path:
    """Records as JSON lines, then `raw_lines` as they are (bytes a JSON writer would not write)."""
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + b"".join(line + b"\n" for line in raw_lines))
    return path
