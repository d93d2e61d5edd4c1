from hatchway.linksocks.cli import main
main()
