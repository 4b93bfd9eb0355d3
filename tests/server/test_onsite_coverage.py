"""Tests for server.onsite.coverage (issue 6, "Coverage and travel")."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from server.onsite.coverage import (
    TIERS,
    City,
    UnknownCity,
    cities,
    haversine_km,
    nearest_base,
    resolve_city,
)

TIER_1 = {"北京", "上海", "广州", "深圳"}
NEW_TIER_1_2023 = {
    "成都", "重庆", "杭州", "武汉", "苏州", "西安", "南京", "长沙",
    "天津", "郑州", "东莞", "无锡", "宁波", "青岛", "合肥",
}  # fmt: skip


def _data() -> dict[str, object]:
    text = resources.files("server.onsite").joinpath("cities.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


def test_data_file_cites_sources() -> None:
    data = _data()
    source = json.dumps(data["source"], ensure_ascii=False)
    assert "第一财经" in source and "2023" in source
    assert "GeoNames" in source and "approximate" in source.lower()
    assert isinstance(data["updated"], str) and data["updated"]


def test_cities_loaded_once_and_plausible() -> None:
    all_cities = cities()
    assert all_cities is cities()
    assert len(all_cities) >= 80
    assert len({c.name for c in all_cities}) == len(all_cities)
    for city in all_cities:
        assert city.tier in TIERS
        assert 18 <= city.lat <= 54, city
        assert 73 <= city.lon <= 135, city
        assert city.pinyin and city.province


def test_every_tier_present() -> None:
    tiers = {c.tier for c in cities()}
    assert tiers == set(TIERS)


def test_tier_1_and_new_tier_1_lists() -> None:
    by_tier: dict[str, set[str]] = {}
    for city in cities():
        by_tier.setdefault(city.tier, set()).add(city.name)
    assert by_tier["1"] == TIER_1
    assert by_tier["new-1"] == NEW_TIER_1_2023
    assert {"拉萨", "日喀则", "阿里"} <= by_tier["remote"]


@pytest.mark.parametrize(
    "text",
    ["成都", "成都市", " 成都 ", "Chengdu", "cheng du", "CHENGDU", "cheng-du",
     "四川省成都市武侯区人民南路", "成都市高新区天府大道北段1700号"],
)  # fmt: skip
def test_resolve_chengdu(text: str) -> None:
    city = resolve_city(text)
    assert city.name == "成都"
    assert city.province == "四川"
    assert city.tier == "new-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Xi'an", "西安"),
        ("xian", "西安"),
        ("Harbin", "哈尔滨"),
        ("ha er bin", "哈尔滨"),
        ("Lhasa", "拉萨"),
        ("阿里地区", "阿里"),
        ("北京市朝阳区建国路88号", "北京"),
        ("吉林省长春市朝阳区", "长春"),  # the province 吉林省 is not the city 吉林
        ("吉林省吉林市船营区", "吉林"),
        ("广西壮族自治区南宁市青秀区", "南宁"),
        ("上海市黄浦区南京东路100号", "上海"),  # 南京东路 is a street
        ("辽宁省大连市中山区人民路", "大连"),  # 中山区 is a district, not 中山
        ("杭州市余杭区阿里巴巴西溪园区", "杭州"),
        ("黑龙江省哈尔滨市", "哈尔滨"),
        ("石家庄市长安区", "石家庄"),
    ],
)
def test_resolve_variants_and_addresses(text: str, expected: str) -> None:
    assert resolve_city(text).name == expected


def test_address_prefers_longest_match() -> None:
    # "石家庄" (3 chars) wins over the 2-char 大同 appearing earlier.
    assert resolve_city("大同 石家庄").name == "石家庄"


def test_address_equal_length_first_occurrence_wins() -> None:
    assert resolve_city("成都 重庆 两地").name == "成都"
    assert resolve_city("重庆 成都 两地").name == "重庆"
    # ...but a name written with 市 beats a bare one of the same length
    assert resolve_city("重庆方向 成都市武侯区").name == "成都"


@pytest.mark.parametrize("text", ["", "   ", "Atlantis", "火星基地", "北京路", "某某省某某市"])
def test_unknown_city_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(UnknownCity) as info:
        resolve_city(text)
    message = str(info.value)
    assert "could not match" in message
    assert "成都" in message and "Chengdu" in message


@pytest.mark.parametrize(
    ("text", "names"), [("Taizhou", ("台州", "泰州")), ("fuzhou", ("福州", "抚州"))]
)
def test_shared_pinyin_is_ambiguous(text: str, names: tuple[str, str]) -> None:
    with pytest.raises(UnknownCity) as info:
        resolve_city(text)
    for name in names:
        assert name in str(info.value)
    # the Chinese name is unambiguous
    assert {resolve_city(n).name for n in names} == set(names)


def test_haversine_shanghai_beijing() -> None:
    shanghai, beijing = resolve_city("上海"), resolve_city("北京")
    distance = haversine_km(shanghai, beijing)
    assert distance == pytest.approx(1070, abs=30)
    assert haversine_km(beijing, shanghai) == pytest.approx(distance)
    assert haversine_km(shanghai, shanghai) == 0.0


def test_haversine_other_pairs() -> None:
    # Guangzhou–Shenzhen ~105 km, Chengdu–Chongqing ~270 km, Lhasa–Ngari ~1000+ km
    assert haversine_km(resolve_city("广州"), resolve_city("深圳")) == pytest.approx(105, abs=15)
    assert haversine_km(resolve_city("成都"), resolve_city("重庆")) == pytest.approx(270, abs=25)
    assert haversine_km(resolve_city("拉萨"), resolve_city("阿里")) > 1000


def test_nearest_base_picks_chengdu_for_chongqing() -> None:
    base, distance = nearest_base(resolve_city("重庆"), ["上海", "北京", "广州", "成都"])
    assert base.name == "成都"
    assert distance == pytest.approx(haversine_km(resolve_city("重庆"), base))
    assert 200 < distance < 350


def test_nearest_base_other_cases() -> None:
    bases = ["上海", "北京", "广州", "成都"]
    assert nearest_base(resolve_city("东莞"), bases)[0].name == "广州"
    assert nearest_base(resolve_city("苏州"), bases)[0].name == "上海"
    assert nearest_base(resolve_city("天津"), bases)[0].name == "北京"
    base, distance = nearest_base(resolve_city("成都"), ["Beijing", "Chengdu"])
    assert base.name == "成都" and distance == 0.0


def test_nearest_base_errors() -> None:
    city = resolve_city("重庆")
    with pytest.raises(ValueError):
        nearest_base(city, [])
    with pytest.raises(UnknownCity):
        nearest_base(city, ["成都", "Atlantis"])


def test_city_is_frozen() -> None:
    city = resolve_city("深圳")
    assert isinstance(city, City)
    with pytest.raises(AttributeError):
        city.tier = "2"  # type: ignore[misc]
