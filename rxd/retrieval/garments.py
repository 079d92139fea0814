"""What people call clothes and people, by category: each category names the schema words it stands for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """Words that mean the same schema nouns, and the values that these garments imply.

    `nouns` are the schema's own garment words ("shirt", "pants", "shoes", "sleeves"); `implied` are
    (value, noun) pairs a garment carries by definition (shorts are short pants). An implied value never
    overrides one the user said ("a long-sleeved polo" has long sleeves) and never conflicts with one.
    """

    nouns: tuple[str, ...]
    implied: tuple[tuple[str, str], ...]
    words: tuple[str, ...]


def _words(text: str) -> tuple[str, ...]:
    """Entries separated by commas; an entry of several words is a phrase ("tank top")."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


_UPPER, _LOWER, _FEET, _ALL = ("shirt",), ("pants",), ("shoes",), ("shirt", "pants", "shoes")
_SHORT_SLEEVES = (("short", "sleeves"),)
_LONG_BOTH = (("long", "sleeves"), ("long", "pants"))

CATEGORIES: dict[str, Category] = {
    # Upper garments of any sleeve length. A t-shirt implies none: long-sleeved ones are common.
    "upper": Category(
        _UPPER,
        (),
        _words("""
            shirt, shirts, top, tops, t-shirt, t-shirts, tshirt, tshirts, tee-shirt, tee, tees, t shirt,
            blouse, blouses, jumper, jumpers, sweater, sweaters, pullover, jersey, sweatshirt, sweat-shirt,
            hoodie, hoodies, hoody, cardigan, cardigans, cardi, jacket, jackets, coat, coats, overcoat,
            raincoat, mac, parka, anorak, blazer, blazers, windbreaker, windcheater, fleece, bomber,
            puffer, trench coat, trenchcoat, tunic, kurta, poncho, cape, shacket, overshirt, turtleneck,
            rollneck, polo neck, henley, smock, kimono, shawl, gilet, body warmer, bodywarmer, waistcoat,
            button-down, button down, dress shirt, sweat top, track top, crop top, upper body, torso
        """),
    ),
    # Upper garments without sleeves or with short ones by definition.
    "upper_short_sleeves": Category(
        _UPPER,
        _SHORT_SLEEVES,
        _words("""
            tank top, tank tops, tank, tanktop, vest, vests, vest top, singlet, camisole, cami, polo, polos,
            polo shirt, polo-shirt, polo shirts, tube top, halter top, halterneck, halter, muscle shirt
        """),
    ),
    "lower": Category(
        _LOWER,
        (),
        _words("""
            pants, pant, trousers, trouser, jeans, jean, slacks, chinos, chino, leggings, joggers,
            sweatpants, sweats, trackies, track pants, tracksuit bottoms, bottoms, cords, corduroys,
            corduroy trousers, cargos, cargo pants, cargo trousers, khakis, jeggings, skirt, skirts,
            culottes, capris, sarong, kilt, trews, lower body, legs, flares, bell bottoms, dungarees
        """),
    ),
    "lower_short": Category(
        _LOWER,
        (("short", "pants"),),
        _words("""
            shorts, hot pants, hot-pants, hotpants, miniskirt, mini skirt, mini-skirt, miniskirts,
            swim shorts, swimming shorts, board shorts, boardshorts, bermudas, bermuda shorts,
            cycling shorts, running shorts, trunks, swim trunks, skort, skorts, denim shorts, cutoffs
        """),
    ),
    "lower_long": Category(
        _LOWER, (("long", "pants"),), _words("maxi skirt, maxi-skirt, maxi skirts, ankle-length skirt")
    ),
    "footwear": Category(
        _FEET,
        (),
        _words("""
            shoes, shoe, sneakers, sneaker, trainers, trainer, boots, boot, sandals, sandal, flip flops,
            flip-flops, flipflops, thongs, slippers, loafers, loafer, heels, high heels, stilettos, pumps,
            court shoes, brogues, oxfords, moccasins, clogs, espadrilles, mules, wellies, wellingtons,
            wellington boots, gumboots, rain boots, crocs, plimsolls, runners, running shoes, kicks,
            footwear, flats, ballet flats, converse, ankle boots, chelsea boots, hiking boots, work boots,
            doc martens, docs, uggs, feet
        """),
    ),
    # One-piece outfits: one colour for top and bottom.
    "one_piece": Category(
        ("shirt", "pants"),
        (),
        _words("""
            dress, dresses, frock, gown, gowns, sundress, summer dress, shift dress, wrap dress, swimsuit,
            swimming costume, bathing suit, wetsuit, leotard, kaftan, caftan, robe, bathrobe, sari, saree,
            cheongsam, uniform, scrubs, habit, cassock, apron
        """),
    ),
    "one_piece_short": Category(
        ("shirt", "pants"),
        (("short", "pants"),),
        _words("mini dress, minidress, mini-dress, playsuit, romper, skater dress, tennis dress"),
    ),
    "one_piece_long": Category(
        ("shirt", "pants"),
        (("long", "pants"),),
        _words("""
            maxi dress, maxidress, maxi-dress, jumpsuit, boiler suit, boilersuit, overalls, coveralls,
            onesie, abaya, burqa
        """),
    ),
    # Suits of jacket and trousers: long sleeves and long legs.
    "suit": Category(
        ("shirt", "pants"),
        _LONG_BOTH,
        _words(
            "tracksuit, tracksuits, track suit, shell suit, shellsuit, suit, suits, trouser suit, pantsuit, "
            "tux, tuxedo"
        ),
    ),
    # The whole outfit: a colour for it is a colour for every garment.
    "outfit": Category(
        _ALL,
        (),
        _words("""
            outfit, outfits, clothes, clothing, attire, garments, gear, all, head to toe, from head to toe,
            head-to-toe, top to toe, head to foot, from head to foot, all over, everything
        """),
    ),
    "sleeves": Category(("sleeves",), (), _words("sleeves, sleeve, sleeved, arms")),
}

# Gender words (informal ones too), as the schema's values; compounds ending in these are found apart.
MALE = _words("""
    male, males, man, men, guy, guys, gentleman, gentlemen, gent, gents, boy, boys, bloke, blokes, chap,
    chaps, lad, lads, laddie, dude, dudes, fella, fellas, feller, fellow, fellows, mister, mr, sir,
    husband, father, dad, daddy, son, brother, grandfather, grandpa, granddad, uncle, boyfriend, lord,
    king, prince, groom, monk, priest, hombre
""")
FEMALE = _words("""
    female, females, woman, women, lady, ladies, girl, girls, gal, gals, lass, lasses, lassie, madam,
    mrs, ms, miss, wife, mother, mum, mom, mummy, mommy, daughter, sister, grandmother, grandma, granny,
    aunt, auntie, girlfriend, queen, princess, bride, nun, chick, chicks
""")
GENDER_SUFFIXES = {
    "woman": "female",
    "women": "female",
    "girl": "female",
    "man": "male",
    "men": "male",
    "boy": "male",
}
# Words that end like a gender word but are not one.
NOT_GENDER = frozenset({"human", "humans", "german", "roman", "shaman", "cowboy", "tomboy", "omen", "stamen"})

# Materials and patterns: known words the index cannot hold (reported, never read as a typo of a colour).
MATERIALS = frozenset(
    _words("""
        leather, suede, denim, wool, woollen, woolen, knitted, knit, cotton, silk, satin, linen, velvet,
        corduroy, nylon, canvas, fleece, tweed, lace, mesh, sequin, sequined, striped, stripy, stripes,
        checked, check, checkered, plaid, tartan, floral, flowery, spotted, polka, dotted, patterned, print,
        printed, camouflage, camo, plain, snow, jet
    """)
)

# Verbs and prepositions after which a colour with no garment is the colour of the whole outfit.
WEARING = frozenset({"wearing", "wears", "wear", "wore", "worn", "dressed", "clad", "sporting", "in"})
